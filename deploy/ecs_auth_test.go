package deploy_test

import (
	"net/url"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// secretName is a variable that carries a secret by its name: a token, a
// key, a password, a certificate or a header (the destination's
// credentials). Such a variable is set from the task's `secrets`, never
// its `environment`. A *_FILE or *_URL variable names where a secret is,
// which is not itself secret.
var secretName = regexp.MustCompile(`(?i)(TOKEN|SECRET|PASSWORD|PRIVATE|_KEY|_CERT|_CA|HEADER|POLICY)$`)

// secretARN is where ECS may read a secret from: Secrets Manager or the
// SSM Parameter Store of the task's own region and account.
var secretARN = regexp.MustCompile(`^arn:aws:(secretsmanager:([a-z0-9-]+):(\d{12}):secret:[A-Za-z0-9/_+=.@-]+|ssm:([a-z0-9-]+):(\d{12}):parameter/[A-Za-z0-9/_.-]+)$`)

func TestECSSecretsNeverInEnvironment(t *testing.T) {
	for _, file := range []string{"ingestor-task.json", "dispatcher-task.json"} {
		t.Run(file, func(t *testing.T) {
			var td taskDefinition
			readJSON(t, file, &td)
			acct, _, _ := exampleAccount(t)
			for _, c := range td.ContainerDefinitions {
				for _, e := range c.Environment {
					require.False(t, secretName.MatchString(e.Name), "%s: %s looks like a secret: set it from secrets", c.Name, e.Name)
				}
				for _, s := range c.Secrets {
					m := secretARN.FindStringSubmatch(s.ValueFrom)
					require.NotNil(t, m, "%s: %s comes from %q, not a Secrets Manager or SSM ARN", c.Name, s.Name, s.ValueFrom)
					region, id := m[2]+m[4], m[3]+m[5]
					require.Equal(t, acct.region, region, "%s: %s", c.Name, s.Name)
					require.Equal(t, acct.id, id, "%s: %s", c.Name, s.Name)
				}
			}
		})
	}
}

// secretFiles reads the secretfiles container's command: the folder it
// writes, and the variable each file is written from.
func secretFiles(tb testing.TB, c containerDefinition) (string, map[string]string) {
	tb.Helper()
	require.Equal(tb, []string{"/secretfiles"}, c.EntryPoint)
	require.GreaterOrEqual(tb, len(c.Command), 3)
	require.Equal(tb, "-dir", c.Command[0])
	files := map[string]string{}
	for _, arg := range c.Command[2:] {
		file, name, ok := strings.Cut(arg, "=")
		require.True(tb, ok, arg)
		files[file] = name
	}
	return c.Command[1], files
}

func TestECSAuth(t *testing.T) {
	dockerfile, err := os.ReadFile(filepath.Join(repoRoot, "deploy", "docker", "Dockerfile"))
	require.NoError(t, err)
	require.Contains(t, string(dockerfile), "COPY --from=build /out/secretfiles /secretfiles", "the image must carry secretfiles")

	for _, file := range []string{"ingestor-task.json", "dispatcher-task.json"} {
		t.Run(file, func(t *testing.T) {
			var td taskDefinition
			readJSON(t, file, &td)
			require.Len(t, td.ContainerDefinitions, 2)
			svc, writer := td.ContainerDefinitions[0], td.ContainerDefinitions[1]
			env := svc.env()

			// The writer: same image, not essential (it exits), its
			// variables all from secrets.
			require.Equal(t, svc.Image, writer.Image)
			require.NotNil(t, writer.Essential)
			require.False(t, *writer.Essential, "secretfiles exits once the files are written")
			dir, files := secretFiles(t, writer)
			fromSecrets := map[string]bool{}
			for _, s := range writer.Secrets {
				fromSecrets[s.Name] = true
			}
			for f, name := range files {
				require.True(t, fromSecrets[name], "%s is written from %s, which is not among the writer's secrets", f, name)
			}
			require.Empty(t, writer.Environment)

			// One task volume, read-write for the writer, read-only for the
			// service, which starts once the writer succeeded.
			require.Len(t, td.Volumes, 1)
			volume := td.Volumes[0].Name
			mount := func(c containerDefinition) (bool, bool) {
				for _, m := range c.MountPoints {
					if m.SourceVolume == volume && m.ContainerPath == dir {
						return true, m.ReadOnly
					}
				}
				return false, false
			}
			found, ro := mount(writer)
			require.True(t, found && !ro, "the writer mounts %s read-write at %s", volume, dir)
			found, ro = mount(svc)
			require.True(t, found && ro, "the service mounts %s read-only at %s", volume, dir)
			require.Len(t, svc.DependsOn, 1)
			require.Equal(t, writer.Name, svc.DependsOn[0].ContainerName)
			require.Equal(t, "SUCCESS", svc.DependsOn[0].Condition)

			// Every file the service reads there is one the writer writes;
			// the server's TLS and policy come that way.
			for _, key := range []string{"SPOOL_TLS_CERT_FILE", "SPOOL_TLS_KEY_FILE", "SPOOL_AUTH_POLICY_FILE"} {
				require.NotEmpty(t, env[key], "%s is not set", key)
			}
			for key, value := range env {
				if !strings.HasSuffix(key, "_FILE") {
					continue
				}
				require.Equal(t, dir, path.Dir(value), "%s=%s is not in %s", key, value, dir)
				require.Contains(t, files, path.Base(value), "%s names %s, which secretfiles does not write", key, value)
			}

			// Tokens from the organisation's identity provider.
			require.NotContains(t, env, "SPOOL_AUTH_JWKS_FILE", "on ECS the JWKS comes from the identity provider")
			jwks, err := url.Parse(env["SPOOL_AUTH_JWKS_URL"])
			require.NoError(t, err)
			require.Equal(t, "https", jwks.Scheme)
			require.NotEmpty(t, env["SPOOL_AUTH_ISSUER"])
			require.NotEmpty(t, env["SPOOL_AUTH_AUDIENCE"])

			// Nothing of the local stack's allowances.
			require.NotContains(t, env, "SPOOL_INSECURE")
			require.NotContains(t, env, "SPOOL_ALLOW_INSECURE_DESTINATION")
			require.Contains(t, []string{"", "false"}, env["SPOOL_GRPC_REFLECTION"], "reflection is off on ECS")
		})
	}
}

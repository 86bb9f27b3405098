package deploy_test

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"os"
	"path"
	"path/filepath"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/types"
	"github.com/stretchr/testify/require"

	"github.com/spoolhq/spool/platform/devpki"
)

// pkiDir is where the pki service writes the dev PKI, from its command.
func pkiDir(tb testing.TB, p *types.Project) string {
	tb.Helper()
	cmd := service(tb, p, "pki").Command
	require.Equal(tb, "pki", cmd[0])
	for i := 1; i+1 < len(cmd); i++ {
		if cmd[i] == "-dir" {
			return cmd[i+1]
		}
	}
	tb.Fatal("the pki service's command names no -dir")
	return ""
}

// pkiHosts returns the extra host names of the pki service's command.
func pkiHosts(tb testing.TB, p *types.Project) []string {
	tb.Helper()
	cmd := service(tb, p, "pki").Command
	for i := 1; i+1 < len(cmd); i++ {
		if cmd[i] == "-hosts" {
			return strings.Split(cmd[i+1], ",")
		}
	}
	return nil
}

// requireInPKI checks that file lies in the pki volume as s mounts it:
// read-only, at the folder the pki service writes (mounted read-write).
func requireInPKI(tb testing.TB, p *types.Project, s types.ServiceConfig, file string) {
	tb.Helper()
	dir := pkiDir(tb, p)
	require.True(tb, strings.HasPrefix(path.Clean(file), dir+"/"), "%s: %s is not in %s", s.Name, file, dir)
	var writer *types.ServiceVolumeConfig
	for _, v := range service(tb, p, "pki").Volumes {
		if v.Target == dir {
			writer = &v
		}
	}
	require.NotNil(tb, writer, "the pki service does not mount a volume at %s", dir)
	require.Equal(tb, types.VolumeTypeVolume, writer.Type)
	require.False(tb, writer.ReadOnly, "the pki service writes the PKI")
	for _, v := range s.Volumes {
		if v.Target == dir {
			require.Equal(tb, writer.Source, v.Source, "%s mounts another volume at %s", s.Name, dir)
			require.True(tb, v.ReadOnly, "%s needs to read the PKI only", s.Name)
			dep, ok := s.DependsOn["pki"]
			require.True(tb, ok, "%s reads the PKI before the pki service made it", s.Name)
			require.Equal(tb, types.ServiceConditionCompletedSuccessfully, dep.Condition)
			return
		}
	}
	tb.Fatalf("%s does not mount the pki volume at %s", s.Name, dir)
}

func TestComposeAuth(t *testing.T) {
	p := loadAll(t)
	// devpki's own settings, with its file names, are what the services
	// must get, in the folder the pki service writes.
	pki, err := devpki.New(t.TempDir())
	require.NoError(t, err)
	dir := pkiDir(t, p)

	for _, name := range []string{"ingestor", "dispatcher"} {
		t.Run(name, func(t *testing.T) {
			s := service(t, p, name)
			for _, kv := range pki.ServerEnv() {
				key, want, _ := strings.Cut(kv, "=")
				got := envOf(t, s, key)
				if strings.HasSuffix(key, "_FILE") {
					require.Equal(t, path.Join(dir, filepath.Base(want)), got, key)
					requireInPKI(t, p, s, got)
					continue
				}
				require.Equal(t, want, got, key)
			}
			require.NotContains(t, s.Environment, "SPOOL_INSECURE", "the services run as on ECS, with TLS and tokens")
			require.Equal(t, "false", envOf(t, s, "SPOOL_GRPC_REFLECTION"), "reflection is off by default")
		})
	}

	t.Run("reflection on request", func(t *testing.T) {
		p := loadAll(t, "SPOOL_GRPC_REFLECTION=true")
		require.Equal(t, "true", envOf(t, service(t, p, "ingestor"), "SPOOL_GRPC_REFLECTION"))
	})

	t.Run("the CLI", func(t *testing.T) {
		s := service(t, p, "spool")
		for _, key := range []string{"SPOOL_CA_FILE", "SPOOL_TOKEN_FILE"} {
			requireInPKI(t, p, s, envOf(t, s, key))
		}
		require.Equal(t, path.Join(dir, "ca.pem"), envOf(t, s, "SPOOL_CA_FILE"))
		require.Equal(t, path.Join(dir, "tokens", "admin"), envOf(t, s, "SPOOL_TOKEN_FILE"), "the CLI holds every permission")
		require.NotContains(t, s.Environment, "SPOOL_TOKEN", "a token value never sits in the compose file")
		require.NotContains(t, s.Environment, "SPOOL_TLS_SERVER_NAME", "the server certificate names the hosts the CLI dials")

		// The certificate the pki service's command makes names every host
		// the CLI dials.
		made, err := devpki.New(t.TempDir(), pkiHosts(t, p)...)
		require.NoError(t, err)
		pair, err := tls.LoadX509KeyPair(made.ServerCertFile(), made.ServerKeyFile())
		require.NoError(t, err)
		leaf, err := x509.ParseCertificate(pair.Certificate[0])
		require.NoError(t, err)
		addrs := append([]string{envOf(t, s, "SPOOL_INGESTOR_ADDR")}, strings.Split(envOf(t, s, "SPOOL_DISPATCHER_ADDRS"), ",")...)
		for _, addr := range addrs {
			host, _, err := net.SplitHostPort(strings.TrimSpace(addr))
			require.NoError(t, err, addr)
			require.NoError(t, leaf.VerifyHostname(host), "the server certificate must name %s", host)
		}
	})

	t.Run("the destination allowance is for the sink only", func(t *testing.T) {
		for _, s := range p.Services {
			if _, ok := s.Environment["SPOOL_ALLOW_INSECURE_DESTINATION"]; ok {
				require.Equal(t, "dispatcher", s.Name)
				requireServiceURL(t, p, envOf(t, s, "SPOOL_DESTINATION_URL"), "sink")
			}
		}
	})

	t.Run("the images own the PKI's folder", func(t *testing.T) {
		dockerfile, err := os.ReadFile(filepath.Join(repoRoot, "deploy", "docker", "Dockerfile"))
		require.NoError(t, err)
		require.Contains(t, string(dockerfile), "--chown=65532:65532 --chmod=0700 /out/run-spool "+dir,
			"a volume mounted at %s must start out writable by the non-root user", dir)
		require.Contains(t, string(dockerfile), `VOLUME ["`+dir+`"]`)
	})
}

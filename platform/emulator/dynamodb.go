package emulator

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
)

// DynamoDBImpl names a program that plays DynamoDB locally.
type DynamoDBImpl string

// The DynamoDB emulators.
const (
	// Dynalite is a Node.js reimplementation of DynamoDB: it starts at
	// once, but has no transactions and no time to live.
	Dynalite DynamoDBImpl = "dynalite"
	// DynamoDBLocal is AWS's own emulator, a Java program: closer to AWS
	// (transactions, time to live, ReturnValuesOnConditionCheckFailure),
	// seconds to start.
	DynamoDBLocal DynamoDBImpl = "dynamodb-local"
)

// DynamoDBEnv chooses the DynamoDB emulator of the local stack and the
// tests: "dynalite" (the default) or "dynamodb-local".
const DynamoDBEnv = "SPOOL_DYNAMODB_EMULATOR"

// ChosenDynamoDB returns the DynamoDB emulator DynamoDBEnv names.
func ChosenDynamoDB() (DynamoDBImpl, error) {
	switch v := DynamoDBImpl(os.Getenv(DynamoDBEnv)); v {
	case "", Dynalite:
		return Dynalite, nil
	case DynamoDBLocal:
		return DynamoDBLocal, nil
	default:
		return "", fmt.Errorf("%s=%q: want %q or %q", DynamoDBEnv, v, Dynalite, DynamoDBLocal)
	}
}

// dynamoDBLocalDir is where the npm package amplify-dynamodb-simulator
// keeps AWS's DynamoDB Local jar and its libraries. Only that folder is
// used; the package's JavaScript wrapper is not.
var dynamoDBLocalDir = filepath.Join("node_modules", "amplify-dynamodb-simulator", "emulator")

// DynamoDBLocalCommand runs DynamoDB Local in memory on port. With
// sharedDB, every caller sees one database, as on one AWS account and as
// dynalite plays it: what the local stack wants, where the CLI may use
// other local credentials than the services'. Without, DynamoDB Local
// keeps one database per access key and region, which lets tests share one
// process (see emutest).
//
// DynamoDB Local has no option to choose its interface: it listens on all
// of them, not only on loopback as the other emulators do.
func DynamoDBLocalCommand(localDir string, port int, sharedDB bool) (*exec.Cmd, error) {
	dir := filepath.Join(localDir, dynamoDBLocalDir)
	if _, err := os.Stat(filepath.Join(dir, "DynamoDBLocal.jar")); err != nil {
		return nil, errNotInstalled(localDir)
	}
	java, err := exec.LookPath("java")
	if err != nil {
		return nil, fmt.Errorf("%s=%s needs a Java runtime (8 or later) on PATH: %w; install one, or unset %s to use dynalite",
			DynamoDBEnv, DynamoDBLocal, err, DynamoDBEnv)
	}
	args := []string{
		// C1 only and the serial collector: the JVM starts in about half
		// the time, which is what tests wait for; an emulator serving a
		// few thousand requests never needs C2's peak speed.
		"-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC",
		"-Djava.library.path=DynamoDBLocal_lib", "-jar", "DynamoDBLocal.jar",
		"-inMemory", "-port", strconv.Itoa(port), "-disableTelemetry",
	}
	if sharedDB {
		args = append(args, "-sharedDb")
	}
	cmd := exec.Command(java, args...)
	cmd.Dir = dir
	return cmd, nil
}

// Command ingestor serves spool.v1.IngestService: it accepts CSV files over
// gRPC and publishes their rows to SQS, one message per row.
//
// Every flag falls back to an environment variable (-queue-url to
// SPOOL_QUEUE_URL, and so on); AWS settings come from the SDK's default
// chain, including AWS_ENDPOINT_URL_SQS and AWS_ENDPOINT_URL_DYNAMODB.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "ingestor:", err)
		os.Exit(1)
	}
}

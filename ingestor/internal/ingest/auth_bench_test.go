package ingest

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
	"github.com/spoolhq/spool/ingestor/internal/publish"
	"github.com/spoolhq/spool/platform/devpki"
	"github.com/spoolhq/spool/platform/grpcserve"
)

// discardPub publishes nowhere, so a benchmark measures the gRPC path and
// the handler, not a queue.
type discardPub struct{ n atomic.Int64 }

func (p *discardPub) Publish(context.Context, *spoolv1.Envelope) error { p.n.Add(1); return nil }
func (p *discardPub) Flush(context.Context) error                      { return nil }
func (p *discardPub) Stats() publish.Stats                             { return publish.Stats{Published: p.n.Load()} }
func (p *discardPub) Close()                                           {}

type benchBearer string

func (b benchBearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(b)}, nil
}

func (benchBearer) RequireTransportSecurity() bool { return true }

// serveOver serves the ingest handler on loopback TCP with sec, and returns
// a client dialled with opts.
func serveOver(b *testing.B, sec grpcserve.Security, opts ...grpc.DialOption) spoolv1.IngestServiceClient {
	b.Helper()
	log := slog.New(slog.DiscardHandler)
	srv := grpcserve.New(log, sec)
	spoolv1.RegisterIngestServiceServer(srv, New(newFakeJobs(), Config{
		NewPublisher: func() (Publisher, error) { return &discardPub{}, nil },
		Log:          log, ProgressInterval: time.Second, AbortAfter: time.Minute,
	}))
	return serveOn(b, srv, opts...)
}

// serveOn serves srv on loopback TCP until the benchmark ends, and returns
// a client dialled with opts.
func serveOn(b *testing.B, srv *grpcserve.Server, opts ...grpc.DialOption) spoolv1.IngestServiceClient {
	b.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(b, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx, lis, time.Second) }()
	conn, err := grpc.NewClient(lis.Addr().String(), opts...)
	require.NoError(b, err)
	b.Cleanup(func() {
		_ = conn.Close() // the client's side only; the server's error is checked below
		cancel()
		if err := <-done; err != nil {
			b.Errorf("serve: %v", err)
		}
	})
	return spoolv1.NewIngestServiceClient(conn)
}

// BenchmarkAuth measures what TLS and authentication cost per call: a
// unary GetJob and a StreamFile of 100 000 rows, served plaintext without
// authentication, with TLS and a bearer token (ES256) verified on every
// call, with TLS and a bearer token through the verified-token cache, and
// with TLS and a client certificate, in the same run. Each mode reports its own time per
// call and its overhead over plaintext.
//
//	cd ingestor && go test -run '^$' -bench Auth/GetJob -benchtime 2000x -count 5 ./internal/ingest/
//	cd ingestor && go test -run '^$' -bench Auth/StreamFile -benchtime 6x -count 5 ./internal/ingest/
func BenchmarkAuth(b *testing.B) {
	pki, err := devpki.New(b.TempDir())
	require.NoError(b, err)
	flags := grpcserve.SecurityFlags{
		CertFile: pki.ServerCertFile(), KeyFile: pki.ServerKeyFile(), ClientCAFile: pki.CAFile(), PolicyFile: pki.PolicyFile(),
		JWKSFile: pki.JWKSFile(), Issuer: devpki.Issuer, Audience: devpki.Audience,
	}
	secure, err := flags.Load(context.Background(), slog.New(slog.DiscardHandler), Rules)
	require.NoError(b, err)
	flags.TokenCacheTTL = time.Minute
	cached, err := flags.Load(context.Background(), slog.New(slog.DiscardHandler), Rules)
	require.NoError(b, err)
	pool, err := pki.CertPool()
	require.NoError(b, err)
	token, err := pki.Token("bench", []string{"admin"}, time.Hour)
	require.NoError(b, err)
	clientCert, err := pki.ClientTLS()
	require.NoError(b, err)

	modes := []struct {
		name string
		sec  grpcserve.Security
		opts []grpc.DialOption
	}{
		{name: "insecure", opts: []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}},
		{name: "tls+token", sec: secure, opts: []grpc.DialOption{
			grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12})),
			grpc.WithPerRPCCredentials(benchBearer(token)),
		}},
		{name: "tls+token+cache", sec: cached, opts: []grpc.DialOption{
			grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12})),
			grpc.WithPerRPCCredentials(benchBearer(token)),
		}},
		{name: "tls+client-cert", sec: secure, opts: []grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(clientCert))}},
	}
	const rows, batch = 100_000, 500
	batches := make([]*spoolv1.StreamFileRequest, 0, rows/batch)
	for i := 0; i < rows; i += batch {
		rb := &spoolv1.RowBatch{}
		for r := i; r < i+batch; r++ {
			rb.Rows = append(rb.Rows, &spoolv1.Row{Fields: []string{"E" + strconv.Itoa(r), "Employee " + strconv.Itoa(r), "1234.56"}})
		}
		batches = append(batches, &spoolv1.StreamFileRequest{Msg: &spoolv1.StreamFileRequest_Rows{Rows: rb}})
	}
	header := hdr(&spoolv1.FileHeader{FileName: "bench.csv", Columns: []string{"employee_id", "name", "amount"}})

	// The modes take turns within each iteration, each iteration starting
	// with the next one, so the load of a shared machine (and the garbage
	// the previous call left) falls on all of them alike.
	clients := make([]spoolv1.IngestServiceClient, len(modes))
	ids := make([]string, len(modes))
	ctx := context.Background()
	for i, m := range modes {
		clients[i] = serveOver(b, m.sec, m.opts...)
		// A job for GetJob to read: a stream of one row.
		created, err := send(ctx, clients[i], header, rowsMsg([]string{"E0", "x", "1.00"}))
		require.NoError(b, err)
		ids[i] = created.GetJobId()
	}
	report := func(b *testing.B, took []time.Duration, unit string, per float64) {
		for i, m := range modes {
			b.ReportMetric(float64(took[i].Nanoseconds())/float64(b.N)/per, m.name+"-"+unit)
		}
		for i := 1; i < len(modes); i++ {
			b.ReportMetric(100*(float64(took[i])/float64(took[0])-1), modes[i].name+"-overhead-%")
		}
	}
	// timed calls call once per client each round, starting the round at
	// a different client so that no mode always goes first, and sums each
	// client's time.
	timed := func(b *testing.B, call func(i int, c spoolv1.IngestServiceClient) error) []time.Duration {
		took := make([]time.Duration, len(modes))
		turn := 0
		for b.Loop() {
			turn++
			for k := range clients {
				i := (turn + k) % len(clients)
				start := time.Now()
				if err := call(i, clients[i]); err != nil {
					b.Fatal(err)
				}
				took[i] += time.Since(start)
			}
		}
		return took
	}
	b.Run("GetJob", func(b *testing.B) {
		took := timed(b, func(i int, c spoolv1.IngestServiceClient) error {
			_, err := c.GetJob(ctx, &spoolv1.GetJobRequest{JobId: ids[i]})
			return err
		})
		report(b, took, "µs/call", 1e3)
	})
	b.Run("StreamFile100k", func(b *testing.B) {
		msgs := append([]*spoolv1.StreamFileRequest{header}, batches...)
		took := timed(b, func(_ int, c spoolv1.IngestServiceClient) error {
			resp, err := send(ctx, c, msgs...)
			if err != nil {
				return err
			}
			if resp.GetRowsPublished() != rows {
				return fmt.Errorf("published %d rows, want %d", resp.GetRowsPublished(), rows)
			}
			return nil
		})
		report(b, took, "ms/stream", 1e6)
	})
}

// Command spool-stack runs Spool's local stack for `make up`, `make down`
// and `make demo`, and writes sample payroll files.
//
//	spool-stack up [-dispatchers 2]    start everything in the background
//	spool-stack down                   stop what `up` started
//	spool-stack pki -dir D [-hosts H]  make a throwaway PKI and a token file per role in D; the
//	                                   server certificate also names the hosts H (comma-separated)
//	spool-stack sample -rows N -o F    write a sample payroll CSV
//	spool-stack check -rows N          compare the sink's stats with N
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spoolhq/spool/local/sample"
	"github.com/spoolhq/spool/local/stack"
	"github.com/spoolhq/spool/platform/devpki"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "spool-stack:", err)
		os.Exit(1)
	}
}

const usage = "usage: spool-stack up|down|pki|sample|check [flags]"

func run(ctx context.Context, args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return errors.New(usage)
	}
	fs := flag.NewFlagSet("spool-stack "+args[0], flag.ContinueOnError)
	stateDir := fs.String("state-dir", ".spool", "folder for logs, pids and stack.env")
	switch args[0] {
	case "up":
		binDir := fs.String("bin-dir", "bin", "folder with the ingestor, dispatcher and sink binaries")
		n := fs.Int("dispatchers", 2, "number of dispatcher processes")
		insecure := fs.Bool("insecure", false, "run the services plaintext and without authentication")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		if _, err := os.Stat(filepath.Join(*stateDir, stack.PIDFile)); err == nil {
			return fmt.Errorf("a stack is already up (%s exists); run `make down` first", filepath.Join(*stateDir, stack.PIDFile))
		}
		bin, err := filepath.Abs(*binDir)
		if err != nil {
			return err
		}
		state, err := filepath.Abs(*stateDir)
		if err != nil {
			return err
		}
		o := stack.Options{StateDir: state, BinDir: bin, Dispatchers: *n, Detach: true, Log: stdout}
		if !*insecure {
			// Kept across restarts: a CA a tool was told to trust stays.
			if o.PKI, err = devpki.New(filepath.Join(state, stack.PKIDir)); err != nil {
				return fmt.Errorf("make pki: %w", err)
			}
		}
		s, err := stack.Up(ctx, o)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "stack is up; endpoints and credentials in %s (logs in %s)\n",
			filepath.Join(*stateDir, stack.EnvFile), filepath.Join(*stateDir, "logs"))
		for _, kv := range s.Env {
			if k, _, _ := strings.Cut(kv, "="); shown[k] {
				fmt.Fprintln(stdout, "  "+kv)
			}
		}
		if o.PKI != nil {
			fmt.Fprintf(stdout, "  TLS and tokens on: SPOOL_TOKEN (admin) and SPOOL_TOKEN_{SUBMITTER,VIEWER,OPERATOR,APPROVER}, valid for %s, are in %s\n",
				stack.TokenTTL, filepath.Join(*stateDir, stack.EnvFile))
		}
		return nil
	case "pki":
		dir := fs.String("dir", filepath.Join(".spool", stack.PKIDir), "folder for the PKI and its tokens/ folder")
		hosts := fs.String("hosts", "", "comma-separated host names or IP addresses the server certificate names besides localhost, 127.0.0.1 and ::1 (the names clients dial)")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		var names []string
		for _, h := range strings.Split(*hosts, ",") {
			if h = strings.TrimSpace(h); h != "" {
				names = append(names, h)
			}
		}
		files, err := stack.WritePKI(*dir, names...)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "PKI in %s; tokens valid for %s:\n", *dir, stack.TokenTTL)
		for _, f := range files {
			fmt.Fprintln(stdout, "  "+f)
		}
		return nil
	case "down":
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		return stack.DownDetached(*stateDir, stdout)
	case "sample":
		rows := fs.Int("rows", 5000, "data rows")
		seed := fs.Uint64("seed", 1, "random seed")
		out := fs.String("o", "-", "output file (- for stdout)")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		w := stdout
		if *out != "-" {
			f, err := os.Create(*out)
			if err != nil {
				return err
			}
			defer f.Close()
			w = f
		}
		return sample.Write(w, *rows, *seed)
	case "check":
		rows := fs.Int64("rows", 0, "rows the sink must have received, each once")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		return check(ctx, *stateDir, *rows, stdout)
	default:
		return errors.New(usage)
	}
}

// shown are the settings of stack.env that `up` prints: where things are,
// not the credentials and service settings the file also holds.
var shown = map[string]bool{
	"SPOOL_INGESTOR_ADDR": true, "SPOOL_DISPATCHER_ADDRS": true, "SPOOL_SINK_URL": true,
	"SPOOL_INGESTOR_METRICS_URL": true, "SPOOL_DISPATCHER_METRICS_URLS": true,
	"SPOOL_QUEUE_URL": true, "SPOOL_DLQ_URL": true, "SPOOL_TABLE": true, "SPOOL_CA_FILE": true,
}

// check reads the sink's /stats and says whether every row arrived once.
func check(ctx context.Context, stateDir string, rows int64, stdout io.Writer) error {
	sinkURL := os.Getenv("SPOOL_SINK_URL")
	if sinkURL == "" {
		b, err := os.ReadFile(filepath.Join(stateDir, stack.EnvFile))
		if err != nil {
			return fmt.Errorf("no SPOOL_SINK_URL and no stack.env: %w", err)
		}
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "SPOOL_SINK_URL="); ok {
				sinkURL = v
			}
		}
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, sinkURL+"/stats", nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("read sink stats: %w", err)
	}
	defer resp.Body.Close()
	var st struct{ Requests, Distinct, Duplicates int64 }
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		return fmt.Errorf("decode sink stats: %w", err)
	}
	fmt.Fprintf(stdout, "sink: %d of %d transactions delivered, %d delivered twice (%d requests accepted)\n",
		st.Distinct, rows, st.Duplicates, st.Requests)
	if st.Distinct != rows || st.Duplicates != 0 {
		return fmt.Errorf("want %d distinct and 0 duplicates at the sink", rows)
	}
	return nil
}

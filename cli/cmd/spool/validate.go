package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"unicode/utf8"

	"github.com/spoolhq/spool/cli/internal/rpcerr"
	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
	"github.com/spoolhq/spool/ingestor/validate"
)

func (a *app) validateCommand() *command {
	c := newCommand("validate", "[flags] FILE.csv", "Check a file (- : standard input) against a profile with the ingestor's own code, locally; nothing is sent.")
	name := c.fs.String("profile", "", "profile to check against; none checks the CSV alone")
	file := c.fs.String("profiles", "", "YAML or JSON profile `file`; without it the profile is read from the ingestor")
	ingestor := c.fs.String("ingestor-addr", defaultIngestorAddr, "ingestor gRPC address (host:port), to read its profiles")
	columns := c.fs.String("columns", "", "column names, comma-separated, when the file has no header row")
	delimiter := c.fs.String("delimiter", ",", "field delimiter, one character")
	amountColumn := c.fs.String("amount-column", "", "column holding the amount")
	businessKey := c.fs.String("business-key", "", "columns identifying a transaction, comma-separated")
	maxErrors := c.fs.Int("max-errors", 100, "invalid rows listed (the count is never capped)")
	c.perCall = []string{"profile", "columns", "amount-column", "business-key"}
	c.run = func(ctx context.Context, args []string) error {
		if len(args) != 1 {
			return usagef("validate: want one FILE.csv (or -)")
		}
		if utf8.RuneCountInString(*delimiter) != 1 {
			return usagef("validate: -delimiter %q: want one character", *delimiter)
		}
		var prof *spoolv1.Profile
		if *name != "" {
			var err error
			if prof, err = a.findProfile(ctx, *name, *file, *ingestor); err != nil {
				return err
			}
		}
		in := io.Reader(a.stdin)
		if args[0] != "-" {
			f, err := os.Open(args[0])
			if err != nil {
				return fmt.Errorf("validate: %w", err)
			}
			defer f.Close()
			in = f
		}
		rep, err := validate.File(in, validate.Options{
			Header: &spoolv1.FileHeader{
				Columns: splitList(*columns), Csv: &spoolv1.CsvOptions{Delimiter: *delimiter},
				AmountColumn: *amountColumn, BusinessKeyColumns: splitList(*businessKey),
			},
			Profile:   prof,
			MaxErrors: *maxErrors,
		})
		if err != nil {
			return fmt.Errorf("validate %s: the ingestor would refuse the file: %w", args[0], describeInvalid(err))
		}
		return printValidation(a.stdout, args[0], *name, rep)
	}
	return c
}

// findProfile reads the named profile from a profile file, or else asks
// the ingestor for it.
func (a *app) findProfile(ctx context.Context, name, file, addr string) (*spoolv1.Profile, error) {
	var list []*spoolv1.Profile
	if file != "" {
		var err error
		if list, err = validate.LoadProfiles(file); err != nil {
			return nil, err
		}
	} else {
		var err error
		if list, err = a.listProfiles(ctx, addr); err != nil {
			return nil, err
		}
	}
	var names []string
	for _, p := range list {
		if p.GetName() == name {
			return p, nil
		}
		names = append(names, p.GetName())
	}
	where := "the ingestor at " + addr
	if file != "" {
		where = file
	}
	return nil, fmt.Errorf("no profile %q in %s (profiles: %s)", name, where, strings.Join(names, ", "))
}

// describeInvalid lists a profile error's violations one per line.
func describeInvalid(err error) error {
	var perr *validate.ProfileError
	if !errors.As(err, &perr) {
		return err
	}
	var b strings.Builder
	b.WriteString(perr.Subject + " is invalid")
	for _, v := range perr.Violations {
		fmt.Fprintf(&b, "\n  %s: %s", v.Field, v.Description)
	}
	return errors.New(b.String())
}

// printValidation prints the report, and returns an error when any row is
// invalid, so the exit status says whether the file is clean.
func printValidation(w io.Writer, path, profile string, rep *validate.Report) error {
	if profile == "" {
		profile = "(none: the CSV alone)"
	}
	fmt.Fprintf(w, "file %s, profile %s, row policy %s\n", path, profile, rowPolicy(rep.Policy))
	fmt.Fprintf(w, "columns: %s\nrows: %d read, %d invalid\n", strings.Join(rep.Columns, ", "), rep.Rows, rep.Rejected)
	for _, e := range rep.Errors {
		fmt.Fprintf(w, "  %s\n", rpcerr.RowError(e))
	}
	if more := rep.Rejected - int64(len(rep.Errors)); more > 0 {
		fmt.Fprintf(w, "  ... and %d more invalid rows\n", more)
	}
	switch {
	case rep.Rejected == 0:
		fmt.Fprintln(w, "valid: the ingestor would accept every row")
		return nil
	case rep.Accepted():
		return fmt.Errorf("%d invalid rows: under skip-rows the ingestor would leave them out and deliver the other %d", rep.Rejected, rep.Rows-rep.Rejected)
	default:
		return fmt.Errorf("%d invalid rows: under reject-file the ingestor would reject the whole file", rep.Rejected)
	}
}

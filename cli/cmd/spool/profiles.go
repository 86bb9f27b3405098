package main

import (
	"context"
	"fmt"
	"strings"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/spoolhq/spool/cli/internal/rpcerr"
	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
)

func (a *app) profilesCommand() *command {
	c := newCommand("profiles", "[flags]", "List the profiles (file schemas) the ingestor knows.")
	ingestor := c.fs.String("ingestor-addr", defaultIngestorAddr, "ingestor gRPC address (host:port)")
	asJSON := c.fs.Bool("json", false, "print the profiles as protobuf JSON")
	c.run = func(ctx context.Context, args []string) error {
		if len(args) != 0 {
			return usagef("profiles: takes no arguments")
		}
		list, err := a.listProfiles(ctx, *ingestor)
		if err != nil {
			return err
		}
		if *asJSON {
			b, err := protojson.MarshalOptions{Multiline: true, Indent: "  "}.Marshal(&spoolv1.ListProfilesResponse{Profiles: list})
			if err != nil {
				return fmt.Errorf("encode profiles: %w", err)
			}
			_, err = fmt.Fprintln(a.stdout, string(b))
			return err
		}
		if len(list) == 0 {
			fmt.Fprintln(a.stdout, "the ingestor has no profiles (set -profiles on it)")
			return nil
		}
		for _, p := range list {
			fmt.Fprintln(a.stdout, describeProfile(p))
		}
		return nil
	}
	return c
}

func (a *app) listProfiles(ctx context.Context, addr string) ([]*spoolv1.Profile, error) {
	cc, err := a.dial(addr)
	if err != nil {
		return nil, err
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(ctx, rpcTimeout)
	defer cancel()
	resp, err := spoolv1.NewIngestServiceClient(cc).ListProfiles(ctx, &spoolv1.ListProfilesRequest{})
	if err != nil {
		return nil, fmt.Errorf("list profiles of %s: %w%s", addr, rpcerr.Readable(err), hint(err, "ingestor", "SPOOL_INGESTOR_ADDR"))
	}
	return resp.GetProfiles(), nil
}

// describeProfile is a profile in a few lines: name, policies, columns.
func describeProfile(p *spoolv1.Profile) string {
	var b strings.Builder
	formulas := strings.ToLower(strings.TrimPrefix(p.GetFormulaPolicy().String(), "FORMULA_POLICY_"))
	if p.GetFormulaPolicy() == spoolv1.FormulaPolicy_FORMULA_POLICY_UNSPECIFIED {
		formulas = "reject"
	}
	fmt.Fprintf(&b, "%s", p.GetName())
	if d := p.GetDescription(); d != "" {
		fmt.Fprintf(&b, ": %s", d)
	}
	fmt.Fprintf(&b, "\n  rows: %s, formulas: %s", rowPolicy(p.GetRowPolicy()), formulas)
	if bk := p.GetBusinessKeyColumns(); len(bk) > 0 {
		fmt.Fprintf(&b, ", business key: %s", strings.Join(bk, "+"))
	}
	if a := p.GetAmountColumn(); a != "" {
		fmt.Fprintf(&b, ", amount: %s", a)
	}
	for _, c := range p.GetColumns() {
		t := strings.ToLower(strings.TrimPrefix(c.GetType().String(), "COLUMN_TYPE_"))
		if c.GetType() == spoolv1.ColumnType_COLUMN_TYPE_UNSPECIFIED {
			t = "string"
		}
		if c.GetOptional() {
			t += ", optional"
		}
		fmt.Fprintf(&b, "\n  - %s (%s)", c.GetName(), t)
	}
	if n := len(p.GetBody()); n > 0 {
		fmt.Fprintf(&b, "\n  body: %d members", n)
	}
	return b.String()
}

// rowPolicy names a row policy as profile files spell it.
func rowPolicy(p spoolv1.RowPolicy) string {
	if p == spoolv1.RowPolicy_ROW_POLICY_SKIP_ROWS {
		return "skip-rows"
	}
	return "reject-file"
}

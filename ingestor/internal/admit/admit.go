// Package admit decides what a file and each of its rows must be for the
// ingestor to take them: the one rule set that StreamFile and `spool
// validate` (package validate) both run, so a file that validates locally
// is answered the same way by the ingestor, error for error.
//
// Admission goes in three steps, each before the next can be known:
//
//  1. Header: the stream's header on its own, with its profile (named or
//     inline): the profile is valid, the header does not contradict it,
//     control totals can be checked. The profile supplies the business-key
//     and amount columns the header leaves out.
//  2. File.Columns: the file's columns (the header's, or the file's first
//     record) against the profile and the columns the header names.
//  3. Rows.Check: each row, after the CSV reader's own checks: the
//     profile's column rules, then the amount column as an exact decimal.
//
// Every refusal of steps 1 and 2 is a *profile.Error listing each problem
// at once; the CSV reader's limits and header errors come from csvread.
// Nothing here touches a job: a stream is admitted before any job is
// created or taken over.
package admit

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"

	"google.golang.org/protobuf/proto"

	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
	"github.com/spoolhq/spool/ingestor/internal/csvread"
	"github.com/spoolhq/spool/ingestor/internal/profile"
	"github.com/spoolhq/spool/platform/decimal"
	"github.com/spoolhq/spool/platform/threshold"
)

// Profiles finds a configured profile by name; *profile.Set is one.
type Profiles interface {
	Get(name string) (*spoolv1.Profile, bool)
}

// Profile returns the profile a header names (looked up in profiles, which
// may be nil) or carries inline; nil when it has none.
func Profile(h *spoolv1.FileHeader, profiles Profiles) (*spoolv1.Profile, error) {
	switch {
	case h.GetProfile() != "" && h.GetInlineProfile() != nil:
		return nil, headerError(profile.Violation{Field: "header.profile", Description: "give profile or inline_profile, not both"})
	case h.GetProfile() != "":
		if profiles != nil {
			if p, ok := profiles.Get(h.GetProfile()); ok {
				return p, nil
			}
		}
		return nil, headerError(profile.Violation{Field: "header.profile", Description: fmt.Sprintf("unknown profile %q", h.GetProfile())})
	default:
		return h.GetInlineProfile(), nil
	}
}

// File is a header as admitted under its profile.
type File struct {
	header  *spoolv1.FileHeader
	profile *spoolv1.Profile
}

// Header admits h under p (nil: no profile). The returned header is h with
// the business-key and amount columns of the profile where h names none;
// where h names its own, they must agree with the profile's.
func Header(h *spoolv1.FileHeader, p *spoolv1.Profile) (*File, error) {
	if h == nil {
		h = &spoolv1.FileHeader{}
	}
	if p != nil {
		if err := profile.Check(p); err != nil {
			return nil, err
		}
	}
	var vs []profile.Violation
	bk, amount := h.GetBusinessKeyColumns(), h.GetAmountColumn()
	if len(bk) > 0 && len(p.GetBusinessKeyColumns()) > 0 && !slices.Equal(bk, p.GetBusinessKeyColumns()) {
		vs = append(vs, profile.Violation{Field: "header.business_key_columns", Description: fmt.Sprintf("differ from profile %q's", p.GetName())})
	}
	if amount != "" && p.GetAmountColumn() != "" && amount != p.GetAmountColumn() {
		vs = append(vs, profile.Violation{Field: "header.amount_column", Description: fmt.Sprintf("differs from profile %q's", p.GetName())})
	}
	eff := proto.Clone(h).(*spoolv1.FileHeader)
	if len(bk) == 0 {
		eff.BusinessKeyColumns = p.GetBusinessKeyColumns()
	}
	if amount == "" {
		eff.AmountColumn = p.GetAmountColumn()
	}
	eff.FailureThreshold = threshold.Merge(h.GetFailureThreshold(), p.GetFailureThreshold())
	if err := threshold.Validate(h.GetFailureThreshold()); err != nil {
		vs = append(vs, profile.Violation{Field: "header.failure_threshold", Description: err.Error()})
	}
	if h.GetCanary().GetRows() < 0 {
		vs = append(vs, profile.Violation{Field: "header.canary.rows", Description: fmt.Sprintf("%d is negative", h.GetCanary().GetRows())})
	}
	if d := h.GetDeliverAfter(); d != nil && d.CheckValid() != nil {
		vs = append(vs, profile.Violation{Field: "header.deliver_after", Description: "is not a valid time"})
	}
	vs = append(vs, checkControl(eff.GetControl(), eff.GetAmountColumn())...)
	if len(vs) > 0 {
		return nil, headerError(vs...)
	}
	return &File{header: eff, profile: p}, nil
}

// checkControl refuses control totals that cannot be checked.
func checkControl(c *spoolv1.ControlTotals, amountColumn string) []profile.Violation {
	var vs []profile.Violation
	if c.GetRowCount() < 0 {
		vs = append(vs, profile.Violation{Field: "header.control.row_count", Description: fmt.Sprintf("%d is negative", c.GetRowCount())})
	}
	if sum := c.GetAmountSum(); sum != "" {
		if !decimal.Valid(sum) {
			vs = append(vs, profile.Violation{Field: "header.control.amount_sum", Description: fmt.Sprintf("%q is not a decimal number", sum)})
		}
		if amountColumn == "" {
			vs = append(vs, profile.Violation{Field: "header.control.amount_sum", Description: "needs amount_column"})
		}
	}
	if sum := c.GetSha256(); sum != "" {
		if b, err := hex.DecodeString(sum); err != nil || len(b) != sha256.Size {
			vs = append(vs, profile.Violation{Field: "header.control.sha256", Description: fmt.Sprintf("%q is not 64 hex digits", sum)})
		}
	}
	return vs
}

func headerError(vs ...profile.Violation) error {
	return &profile.Error{Subject: "header", Violations: vs}
}

// Header returns the header as admitted: the profile's columns merged in.
func (f *File) Header() *spoolv1.FileHeader { return f.header }

// Profile returns the file's profile, nil when it has none.
func (f *File) Profile() *spoolv1.Profile { return f.profile }

// Columns checks a file's columns: every column the profile declares or
// maps, and every business-key and amount column, must be one of them. The
// error lists every missing column at once.
func (f *File) Columns(cols []string) (*Rows, error) {
	// Columns the profile names are the profile's to report (Compile);
	// those only the header names are reported here.
	named := map[string]bool{f.profile.GetAmountColumn(): true}
	for _, c := range f.profile.GetBusinessKeyColumns() {
		named[c] = true
	}
	var vs []profile.Violation
	for _, c := range f.header.GetBusinessKeyColumns() {
		if !named[c] && !slices.Contains(cols, c) {
			vs = append(vs, profile.Violation{Field: "header.business_key_columns", Description: fmt.Sprintf("column %q is not a column of the file", c)})
		}
	}
	if c := f.header.GetAmountColumn(); c != "" && !named[c] && !slices.Contains(cols, c) {
		vs = append(vs, profile.Violation{Field: "header.amount_column", Description: fmt.Sprintf("column %q is not a column of the file", c)})
	}
	v, err := profile.Compile(f.profile, cols)
	var perr *profile.Error
	if errors.As(err, &perr) && perr.Subject == "header" {
		// One answer names every problem: the profile's, then those of
		// the columns only the header names.
		perr.Violations = append(perr.Violations, vs...)
		return nil, perr
	}
	if err != nil {
		return nil, err
	}
	if len(vs) > 0 {
		return nil, headerError(vs...)
	}
	r := &Rows{v: v, cols: cols, amount: slices.Index(cols, f.header.GetAmountColumn()), referenceFrom: f.profile.GetReferenceFrom()}
	for _, c := range f.header.GetBusinessKeyColumns() {
		r.bk = append(r.bk, slices.Index(cols, c))
	}
	return r, nil
}

// Rows checks the rows of one file. It is not safe for concurrent use.
type Rows struct {
	v      *profile.Validator
	cols   []string
	amount int   // index of the amount column, or -1
	bk     []int // indexes of the business-key columns
	// referenceFrom is the profile's spec of where the destination's
	// reference is, carried in every envelope; checked by profile.Check.
	referenceFrom string
}

// ReferenceFrom is where the destination's answer carries its reference,
// as the profile says (Envelope.reference_from); empty when it says
// nothing.
func (r *Rows) ReferenceFrom() string { return r.referenceFrom }

// Check returns why a row is refused, or nil: the reader's reason (field
// count, text SQS cannot carry, malformed CSV), else the profile's, else an
// amount that is not an exact decimal. Under a profile that neutralises
// formulas it rewrites the fields concerned in place.
func (r *Rows) Check(row csvread.Row) *spoolv1.RowError {
	if row.Reject != nil {
		return row.Reject
	}
	if bad := r.v.Row(row.Num, row.Fields); bad != nil {
		return bad
	}
	if r.amount >= 0 {
		if a := row.Fields[r.amount]; !decimal.Valid(a) {
			return &spoolv1.RowError{Row: row.Num, Column: r.cols[r.amount], Reason: "amount is not a decimal number", Excerpt: csvread.Excerpt(a)}
		}
	}
	return nil
}

// Amount returns a checked row's amount, "" when the file has no amount
// column.
func (r *Rows) Amount(fields []string) string {
	if r.amount < 0 {
		return ""
	}
	return fields[r.amount]
}

// HasAmount reports whether the file has an amount column.
func (r *Rows) HasAmount() bool { return r.amount >= 0 }

// BusinessKey returns the indexes of the business-key columns, in the
// order the header names them; none when the file names no business key.
func (r *Rows) BusinessKey() []int { return r.bk }

// Policy is what an invalid row does to the file.
func (r *Rows) Policy() spoolv1.RowPolicy { return r.v.Policy() }

// Refuses reports whether a file with this many invalid rows is refused
// whole: under REJECT_FILE one is enough.
func (r *Rows) Refuses(rejected int64) bool {
	return rejected > 0 && r.Policy() == spoolv1.RowPolicy_ROW_POLICY_REJECT_FILE
}

// Body returns the JSON body of a checked row; see profile.Validator.Body.
func (r *Rows) Body(fields []string, m profile.Meta) string { return r.v.Body(fields, m) }

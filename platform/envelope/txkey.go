package envelope

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode"
)

// TransactionKey is the stable key of a row's transaction: the envelope's
// transaction_key, the idempotency key the destination receives, and the
// key of the row's delivery ledger record. The ingestor derives it; a
// dispatcher derives it again only for an envelope that lacks one.
//
// When the file names business-key columns, businessKey holds the row's
// values of them, in the file's order of those columns, and the key is
// "bk:" and the hex SHA-256 of the values, each prefixed with its length
// in bytes and a colon, so that no choice of values makes two different
// transactions collide by shifting a separator, and the same transaction
// in another file has the same key. Otherwise it is "<job id>:<row>".
// Keys of either form never start with "dup:", which the ledger keeps for
// its own records.
func TransactionKey(jobID string, row int64, businessKey []string) string {
	if len(businessKey) == 0 {
		return jobID + ":" + strconv.FormatInt(row, 10)
	}
	h := sha256.New()
	for _, v := range businessKey {
		h.Write([]byte(strconv.Itoa(len(v)) + ":"))
		h.Write([]byte(v))
	}
	return "bk:" + hex.EncodeToString(h.Sum(nil))
}

// Namespace scopes transaction keys in the delivery ledger to one
// destination and, where one is configured, one tenant. The envelope's
// transaction_key (and so the idempotency key a destination receives) is
// the same whatever the namespace: only the ledger's record key differs.
// Without it, the same business key in files for two third parties would
// be one transaction: the second would be marked DUPLICATE of the first
// and never paid; and two fleets sharing a table would suppress each
// other's payments.
type Namespace struct {
	// Tenant names the fleet; empty when the table is not shared.
	Tenant string
	// Destination names the third party the fleet delivers to.
	Destination string
}

// CheckName reports whether s can be a tenant or destination name: not
// empty, and without '|', which separates the parts of a ledger key, or
// control characters.
func CheckName(s string) error {
	if s == "" {
		return errors.New("empty name")
	}
	for _, r := range s {
		if r == '|' || unicode.IsControl(r) {
			return fmt.Errorf("name %q: '|' and control characters are not allowed", s)
		}
	}
	return nil
}

// LedgerKey is the key of the ledger record of the transaction txKey
// (a TransactionKey) in namespace n: "ns:<tenant>|<destination>|<txKey>".
// The parts are separated by '|', which no name contains (CheckName), and
// the key starts with "ns:", so it never starts with "dup:" and never
// equals a key written before namespaces existed, which was txKey itself.
// The zero Namespace keeps that former form.
func (n Namespace) LedgerKey(txKey string) string {
	if n == (Namespace{}) {
		return txKey
	}
	return "ns:" + n.Tenant + "|" + n.Destination + "|" + txKey
}

// TransactionKeyOf returns the transaction key a ledger key was made of:
// the key without its namespace, which is the idempotency key the
// destination received. Any other key is returned as it is.
func TransactionKeyOf(ledgerKey string) string {
	rest, ok := strings.CutPrefix(ledgerKey, "ns:")
	if !ok {
		return ledgerKey
	}
	parts := strings.SplitN(rest, "|", 3)
	if len(parts) != 3 {
		return ledgerKey
	}
	return parts[2]
}

package envelope

import (
	"crypto/sha256"
	"encoding/hex"
	"strconv"
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

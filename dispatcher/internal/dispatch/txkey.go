package dispatch

import (
	"github.com/spoolhq/spool/dispatcher/internal/ledger"
	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
)

// ledgerTx is the ledger transaction of envelope e of job.
//
// Its record is keyed in Options.Namespace, this fleet's destination (and
// tenant): the same business key for another destination is another
// transaction; the zero Namespace keeps the un-namespaced keys. With
// Options.LegacyKeys the claim also looks for the record under its
// un-namespaced key, and keeps using one found there, so that records
// written before namespaces were configured still suppress their
// transaction; that costs a read per claim.
func (h *Handler) ledgerTx(e *spoolv1.Envelope, job *spoolv1.Job) ledger.Tx {
	// envelope.Decode gave a keyless envelope the contract's default key.
	key := e.GetTransactionKey()
	tx := ledger.Tx{
		Key: h.o.Namespace.LedgerKey(key), JobID: e.GetJobId(), Row: e.GetRow(), Envelope: e,
		BusinessKey: BusinessKey(e, job.GetBusinessKeyColumns()), Amount: field(e, job.GetAmountColumn()),
	}
	if h.o.LegacyKeys {
		tx.LegacyKey = key
	}
	return tx
}

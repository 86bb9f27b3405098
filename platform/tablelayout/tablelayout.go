// Package tablelayout declares the single DynamoDB table Spool keeps all its
// state in: every item type, the shape of its key, the attributes that are
// keys of the table or its index, and the table's definition, from which
// package provision builds it.
//
// The key is a generic (pk, sk) pair of strings, typed by prefix, so that
// one table holds every kind of item and every write is a single-item
// conditional write:
//
//	pk                  sk                 item
//	JOB#<job id>        JOB                the job record (package jobstore)
//	JOB#<job id>        CNT#<writer>       one dispatcher's cumulative counts of the job
//	JOB#<job id>        REPAIR             the correction a ledger recount wrote
//	KEY#<job key>       KEY                which job a job key names (KEY#T#<tenant>|<job key> in a tenant's fleet)
//	TX#<ledger key>     TX                 a delivery ledger record (envelope.Namespace.LedgerKey of the transaction key)
//	RATE#<destination>  RATE               a destination's shared rate schedule
//	OPEN                JOB#<job id>       a job whose counters may still need a repair
//	AUDIT#<job id>      EVT#<ms>#<id>      one operator action on the job (package audit)
//	REQUEST             REQ#<request id>   a four-eyes request awaiting or past approval
//	META                LAYOUT             the table's layout: the ledger key format it began with
//
// A job's record and its counter items share a partition, so one Query
// reads the job with its counts. Ledger records alone carry the
// LedgerIndexPK and LedgerIndexSK attributes, so the ledger-by-job index
// is sparse: it holds ledger records only, and no other item may carry an
// attribute of those names. Likewise job records alone carry JobsIndexPK
// and JobsIndexSK, which make the jobs-by-state index a list of jobs.
//
// A job's audit trail has a partition of its own, not the job's, so that
// reading a job never reads its history; its sort keys begin with the
// event's time, so the trail reads in order. Four-eyes requests share one
// partition: they come at the pace of people, and listing the pending
// ones is one Query.
//
// The layout item is written once, by whoever creates the table (package
// provision, or infrastructure code following the README), and never
// changed: it says what the table held from its first day. A table
// without it may hold ledger records from before their keys were
// namespaced, so dispatchers look for those too.
package tablelayout

import (
	"fmt"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
)

// Key attribute names of the table.
const (
	PK = "pk"
	SK = "sk"
)

// The ledger's index: every ledger record carries the job id and row it
// came from, and a job's records are read through it in row order.
const (
	LedgerIndex   = "ledger-by-job"
	LedgerIndexPK = "job_id"
	LedgerIndexSK = "row"
)

// The jobs' index: every job record carries its state and a sort key of
// its creation time, so the jobs in a state are read newest first, a page
// at a time, in a time range, whatever the number of jobs. A state is one
// index partition; it is written only when a job changes state (counters
// are other items), a few writes per job, far below a partition's limit.
const (
	JobsIndex   = "jobs-by-state"
	JobsIndexPK = "list_state"
	JobsIndexSK = "list_created"
)

// JobsIndexCreated is a job's JobsIndexSK: its creation time in Unix
// milliseconds, zero-padded so that strings sort as times, then its id, so
// that two jobs created in the same millisecond both have a place.
func JobsIndexCreated(createdMillis int64, jobID string) string {
	return JobsIndexBound(createdMillis) + jobID
}

// JobsIndexJobID returns the job id of a JobsIndexSK.
func JobsIndexJobID(created string) string {
	_, id, _ := strings.Cut(created, "#")
	return id
}

// JobsIndexBound is the JobsIndexSK bound of a time: every job created at
// or after it sorts at or after it, every one created before it sorts
// before.
func JobsIndexBound(millis int64) string { return fmt.Sprintf("%013d#", millis) }

// ExpiresAt is the table's time-to-live attribute: an item that carries it
// (Unix seconds) is deleted by DynamoDB some time after then. Only items
// that may go carry it: settled ledger records, after their retention, and
// idle rate schedules.
const ExpiresAt = "expires_at"

// Prefixes and fixed sort keys.
const (
	jobPrefix     = "JOB#"
	jobSK         = "JOB"
	counterPrefix = "CNT#"
	repairSK      = "REPAIR"
	keyPrefix     = "KEY#"
	keySK         = "KEY"
	txPrefix      = "TX#"
	txSK          = "TX"
	ratePrefix    = "RATE#"
	rateSK        = "RATE"
	openPK        = "OPEN"
	auditPrefix   = "AUDIT#"
	eventPrefix   = "EVT#"
	requestPK     = "REQUEST"
	requestPrefix = "REQ#"
	metaPK        = "META"
	layoutSK      = "LAYOUT"
	outboxPK      = "OUTBOX"
)

// Key is the primary key of one item.
type Key struct {
	PK, SK string
}

// Item returns the key as DynamoDB attributes, ready for a Key field or to
// be extended into a whole item.
func (k Key) Item() map[string]types.AttributeValue {
	return map[string]types.AttributeValue{
		PK: &types.AttributeValueMemberS{Value: k.PK},
		SK: &types.AttributeValueMemberS{Value: k.SK},
	}
}

// Job is the key of a job's record.
func Job(jobID string) Key { return Key{PK: JobPartition(jobID), SK: jobSK} }

// JobPartition is the partition of a job: its record, counter items and
// repair item.
func JobPartition(jobID string) string { return jobPrefix + jobID }

// JobCounter is the key of the item in which writer (one dispatcher
// process, or one span of its life) keeps its cumulative counts of a job.
func JobCounter(jobID, writer string) Key {
	return Key{PK: JobPartition(jobID), SK: counterPrefix + writer}
}

// JobRepair is the key of the item holding the correction a recount from
// the ledger wrote for a job.
func JobRepair(jobID string) Key { return Key{PK: JobPartition(jobID), SK: repairSK} }

// Kind is what an item of a job's partition is.
type Kind int

// The kinds of item in a job's partition.
const (
	KindOther Kind = iota
	KindRecord
	KindCounter
	KindRepair
)

// JobItemKind tells a job partition's item by its sort key.
func JobItemKind(sk string) Kind {
	switch {
	case sk == jobSK:
		return KindRecord
	case sk == repairSK:
		return KindRepair
	case strings.HasPrefix(sk, counterPrefix):
		return KindCounter
	}
	return KindOther
}

// JobKey is the key of the item naming the job a job key belongs to.
func JobKey(key string) Key { return Key{PK: keyPrefix + key, SK: keySK} }

// Tx is the key of a delivery ledger record.
func Tx(txKey string) Key { return Key{PK: txPrefix + txKey, SK: txSK} }

// Rate is the key of a destination's rate schedule.
func Rate(destination string) Key { return Key{PK: ratePrefix + destination, SK: rateSK} }

// OpenPartition is the one partition of the register of open jobs.
const OpenPartition = openPK

// Open is the key of a job's entry in the register of open jobs.
func Open(jobID string) Key { return Key{PK: openPK, SK: jobPrefix + jobID} }

// OpenJobID returns the job id of a register entry's sort key.
func OpenJobID(sk string) string { return strings.TrimPrefix(sk, jobPrefix) }

// AuditPartition is the partition of a job's audit trail.
func AuditPartition(jobID string) string { return auditPrefix + jobID }

// AuditEvent is the key of one event of a job's audit trail: at (Unix
// milliseconds, zero-padded so that keys sort as times) and an id that
// tells apart events of the same millisecond.
func AuditEvent(jobID string, atMillis int64, id string) Key {
	return Key{PK: AuditPartition(jobID), SK: fmt.Sprintf("%s%013d#%s", eventPrefix, atMillis, id)}
}

// RequestPartition is the one partition of four-eyes requests.
const RequestPartition = requestPK

// Request is the key of a four-eyes request.
func Request(id string) Key { return Key{PK: requestPK, SK: requestPrefix + id} }

// Layout is the key of the table's layout item.
func Layout() Key { return Key{PK: metaPK, SK: layoutSK} }

// Attributes of the layout item.
const (
	// LayoutLedgerKeys is the format of the ledger keys the table began
	// with, one of the LedgerKeys values.
	LayoutLedgerKeys = "ledger_keys"
	// LayoutCreatedAt is when the item was written, RFC 3339, for people.
	LayoutCreatedAt = "created_at"
)

// LedgerKeysNamespaced is the ledger key format in which every key is
// in its destination's (and tenant's) namespace
// (envelope.Namespace.LedgerKey): a table that began with it holds no
// record under an un-namespaced key.
const LedgerKeysNamespaced = "namespaced"

// LayoutItem is the layout item of a table created now, at createdAt: its
// ledger keys are namespaced from the start.
func LayoutItem(createdAt time.Time) map[string]types.AttributeValue {
	item := Layout().Item()
	item[LayoutLedgerKeys] = &types.AttributeValueMemberS{Value: LedgerKeysNamespaced}
	item[LayoutCreatedAt] = &types.AttributeValueMemberS{Value: createdAt.UTC().Format(time.RFC3339)}
	return item
}

// OutboxPartition is the one partition of the register of jobs that may
// hold events still to send (package jobstore's outbox).
const OutboxPartition = outboxPK

// Outbox is the key of a job's entry in the outbox register; the job id
// is read back with OpenJobID.
func Outbox(jobID string) Key { return Key{PK: outboxPK, SK: jobPrefix + jobID} }

// KeySchema is the table's primary key.
func KeySchema() []types.KeySchemaElement {
	return []types.KeySchemaElement{
		{AttributeName: aws.String(PK), KeyType: types.KeyTypeHash},
		{AttributeName: aws.String(SK), KeyType: types.KeyTypeRange},
	}
}

// AttributeDefinitions are the types of every attribute the table or its
// index is keyed on.
func AttributeDefinitions() []types.AttributeDefinition {
	return []types.AttributeDefinition{
		{AttributeName: aws.String(PK), AttributeType: types.ScalarAttributeTypeS},
		{AttributeName: aws.String(SK), AttributeType: types.ScalarAttributeTypeS},
		{AttributeName: aws.String(LedgerIndexPK), AttributeType: types.ScalarAttributeTypeS},
		{AttributeName: aws.String(LedgerIndexSK), AttributeType: types.ScalarAttributeTypeN},
		{AttributeName: aws.String(JobsIndexPK), AttributeType: types.ScalarAttributeTypeS},
		{AttributeName: aws.String(JobsIndexSK), AttributeType: types.ScalarAttributeTypeS},
	}
}

// Indexes are the table's global secondary indexes.
func Indexes() []types.GlobalSecondaryIndex {
	return []types.GlobalSecondaryIndex{LedgerIndexDefinition(), JobsIndexDefinition()}
}

// JobsIndexDefinition is the jobs-by-state index. It projects the keys
// only: a listing reads each job whole (record and counters) anyway, so a
// projected copy of the record would cost a write per update for nothing.
func JobsIndexDefinition() types.GlobalSecondaryIndex {
	return indexDefinition(JobsIndex, JobsIndexPK, JobsIndexSK, types.ProjectionTypeKeysOnly)
}

// LedgerIndexDefinition is the ledger-by-job index: every attribute
// projected, so a report reads records from the index alone.
func LedgerIndexDefinition() types.GlobalSecondaryIndex {
	return indexDefinition(LedgerIndex, LedgerIndexPK, LedgerIndexSK, types.ProjectionTypeAll)
}

// indexDefinition is a global secondary index keyed by the attributes pk
// and sk, with the given projection.
func indexDefinition(name, pk, sk string, projection types.ProjectionType) types.GlobalSecondaryIndex {
	return types.GlobalSecondaryIndex{
		IndexName: aws.String(name),
		KeySchema: []types.KeySchemaElement{
			{AttributeName: aws.String(pk), KeyType: types.KeyTypeHash},
			{AttributeName: aws.String(sk), KeyType: types.KeyTypeRange},
		},
		Projection: &types.Projection{ProjectionType: projection},
	}
}

package jobstore

import (
	"context"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/dynamodb/attributevalue"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/spoolhq/spool/platform/condwrite"
	"github.com/spoolhq/spool/platform/tablelayout"
)

// Counts are a job's delivery counters, or deltas of them. A row is
// settled once it is Delivered, Failed (refused for good), Unknown (held
// for reconciliation) or a Duplicate (its business key is another row's
// transaction); resolving an unknown row moves one count from Unknown to
// Delivered, so deltas (and one writer's counts) may be negative. A row
// dead-lettered after its retry budget is settled too (DeadLettered) until
// it is redriven and settles otherwise. Suppressed counts messages, not
// rows: redeliveries of rows already settled.
type Counts struct {
	Delivered, Failed, Retries   int64
	Unknown, Suppressed, Dropped int64
	Duplicates, DeadLettered     int64
}

// Plus returns the sum of c and d, field by field.
func (c Counts) Plus(d Counts) Counts {
	return Counts{
		Delivered: c.Delivered + d.Delivered, Failed: c.Failed + d.Failed, Retries: c.Retries + d.Retries,
		Unknown: c.Unknown + d.Unknown, Suppressed: c.Suppressed + d.Suppressed, Dropped: c.Dropped + d.Dropped,
		Duplicates: c.Duplicates + d.Duplicates, DeadLettered: c.DeadLettered + d.DeadLettered,
	}
}

// Minus returns c less d, field by field.
func (c Counts) Minus(d Counts) Counts {
	return Counts{
		Delivered: c.Delivered - d.Delivered, Failed: c.Failed - d.Failed, Retries: c.Retries - d.Retries,
		Unknown: c.Unknown - d.Unknown, Suppressed: c.Suppressed - d.Suppressed, Dropped: c.Dropped - d.Dropped,
		Duplicates: c.Duplicates - d.Duplicates, DeadLettered: c.DeadLettered - d.DeadLettered,
	}
}

// IsZero reports whether there is nothing to add.
func (c Counts) IsZero() bool { return c == Counts{} }

// settled returns the settled figures of c.
func (c Counts) settled() Settled {
	return Settled{Delivered: c.Delivered, Failed: c.Failed, Unknown: c.Unknown, Duplicates: c.Duplicates, DeadLettered: c.DeadLettered}
}

// storedCounts are counters as stored: on a job's counter items, its
// repair item and its record.
type storedCounts struct {
	Delivered    int64 `dynamodbav:"delivered"`
	Failed       int64 `dynamodbav:"failed"`
	Retries      int64 `dynamodbav:"retries"`
	Unknown      int64 `dynamodbav:"unknown"`
	Suppressed   int64 `dynamodbav:"duplicates_suppressed"`
	Dropped      int64 `dynamodbav:"dropped"`
	Duplicates   int64 `dynamodbav:"duplicate_rows"`
	DeadLettered int64 `dynamodbav:"dead_lettered"`
}

func (c storedCounts) counts() Counts { return Counts(c) }

// counterItem is one writer's cumulative counts of a job, or the repair
// item's correction.
type counterItem struct {
	PK string `dynamodbav:"pk"`
	SK string `dynamodbav:"sk"`
	storedCounts
	// Version orders the writes of the item: a write lands only over an
	// older version, so a retried or late write is harmless.
	Version   int64 `dynamodbav:"version"`
	UpdatedAt int64 `dynamodbav:"updated_at"`
}

// CounterWrite is what one writer counted of a job: its cumulative Counts
// since it began, the Version-th time it writes them.
type CounterWrite struct {
	// Writer names the writer, unique in the table: a dispatcher process,
	// or one span of its life. Two writers never share an item.
	Writer string
	// Version grows with every write of the writer, including a write
	// tried again after an error.
	Version int64
	Counts  Counts
}

// WriteCounts stores a writer's cumulative counts of a job: an absolute
// write to the writer's own counter item, conditional on the item holding
// an older version. A write applied twice (the SDK retries a write whose
// answer was lost), or overtaken by the writer's next one, leaves the
// item as the newest write left it; it never adds anything twice. Reads
// of the job sum its counter items (see Get).
func (s *Store) WriteCounts(ctx context.Context, id string, w CounterWrite) error {
	key := tablelayout.JobCounter(id, w.Writer)
	it := counterItem{PK: key.PK, SK: key.SK, storedCounts: storedCounts(w.Counts), Version: w.Version, UpdatedAt: millis(s.now())}
	av, err := attributevalue.MarshalMap(it)
	if err != nil {
		return fmt.Errorf("marshal counts of job %s: %w", id, err)
	}
	_, err = s.db.PutItem(ctx, &dynamodb.PutItemInput{
		TableName:                 aws.String(s.table),
		Item:                      av,
		ConditionExpression:       aws.String("attribute_not_exists(pk) OR #version < :version"),
		ExpressionAttributeNames:  map[string]string{"#version": "version"},
		ExpressionAttributeValues: map[string]types.AttributeValue{":version": num(w.Version)},
	})
	if condwrite.Failed(err) {
		// The item holds this version already (this very write, applied
		// before its answer was lost) or a newer one of the same writer,
		// which counts everything this one did.
		cur, gerr := s.getCounter(ctx, key)
		if gerr != nil {
			return fmt.Errorf("write counts of job %s: %w", id, gerr)
		}
		if cur != nil && cur.Version >= w.Version {
			return nil
		}
		return fmt.Errorf("write counts of job %s: version %d refused: %w", id, w.Version, ErrChanged)
	}
	if err != nil {
		return fmt.Errorf("write counts of job %s: %w", id, err)
	}
	return nil
}

func (s *Store) getCounter(ctx context.Context, key tablelayout.Key) (*counterItem, error) {
	out, err := s.db.GetItem(ctx, &dynamodb.GetItemInput{
		TableName:      aws.String(s.table),
		Key:            key.Item(),
		ConsistentRead: aws.Bool(true),
	})
	if err != nil {
		return nil, fmt.Errorf("get %s %s: %w", key.PK, key.SK, err)
	}
	if len(out.Item) == 0 {
		return nil, nil
	}
	var it counterItem
	if err := attributevalue.UnmarshalMap(out.Item, &it); err != nil {
		return nil, fmt.Errorf("unmarshal %s %s: %w", key.PK, key.SK, err)
	}
	return &it, nil
}

// partition is a job's partition as read at once: the record, the sum of
// its counter items, and the repair item.
type partition struct {
	rec     *record
	counted Counts
	repair  *counterItem
	// updatedAt is the newest change of any of the items, Unix ms.
	updatedAt int64
}

// readPartition reads a job's record with its counter and repair items,
// in one strongly consistent Query (paginated: a job has an item per
// dispatcher process that worked on it).
func (s *Store) readPartition(ctx context.Context, id string) (*partition, error) {
	p := dynamodb.NewQueryPaginator(s.db, &dynamodb.QueryInput{
		TableName:                 aws.String(s.table),
		KeyConditionExpression:    aws.String("#pk = :pk"),
		ExpressionAttributeNames:  map[string]string{"#pk": tablelayout.PK},
		ExpressionAttributeValues: map[string]types.AttributeValue{":pk": str(tablelayout.JobPartition(id))},
		ConsistentRead:            aws.Bool(true),
	})
	var out partition
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("get job %s: %w", id, err)
		}
		for _, item := range page.Items {
			sk, _ := item[tablelayout.SK].(*types.AttributeValueMemberS)
			if sk == nil {
				continue
			}
			switch tablelayout.JobItemKind(sk.Value) {
			case tablelayout.KindRecord:
				var r record
				if err := attributevalue.UnmarshalMap(item, &r); err != nil {
					return nil, fmt.Errorf("unmarshal job %s: %w", id, err)
				}
				out.rec = &r
				out.updatedAt = max(out.updatedAt, r.UpdatedAt)
			case tablelayout.KindCounter, tablelayout.KindRepair:
				var c counterItem
				if err := attributevalue.UnmarshalMap(item, &c); err != nil {
					return nil, fmt.Errorf("unmarshal counts %s of job %s: %w", sk.Value, id, err)
				}
				out.updatedAt = max(out.updatedAt, c.UpdatedAt)
				if tablelayout.JobItemKind(sk.Value) == tablelayout.KindRepair {
					out.repair = &c
				} else {
					out.counted = out.counted.Plus(c.counts())
				}
			}
		}
	}
	if out.rec == nil {
		return nil, fmt.Errorf("get job %s: %w", id, ErrNotFound)
	}
	return &out, nil
}

// base is what the record and the counter items count, without the
// repair's correction.
func (p *partition) base() Counts { return p.rec.counts().Plus(p.counted) }

// counts are the job's counters: the record's, every writer's, and the
// repair's correction.
func (p *partition) counts() Counts {
	c := p.base()
	if p.repair != nil {
		c = c.Plus(p.repair.counts())
	}
	return c
}

package jobstore

import (
	"cmp"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
	"github.com/spoolhq/spool/platform/tablelayout"
)

// ListStates are the states a listing covers when it names none.
var ListStates = []spoolv1.JobState{
	spoolv1.JobState_JOB_STATE_RECEIVING, spoolv1.JobState_JOB_STATE_SEALED, spoolv1.JobState_JOB_STATE_COMPLETED,
	spoolv1.JobState_JOB_STATE_ABORTED, spoolv1.JobState_JOB_STATE_REJECTED, spoolv1.JobState_JOB_STATE_CANCELLED,
}

// ListFilter selects a page of jobs.
type ListFilter struct {
	// States are the states listed; every state when empty.
	States []spoolv1.JobState
	// Jobs created at or after After and before Before; zero times do not
	// bound.
	After, Before time.Time
	// Limit is the most jobs of the page, at least 1.
	Limit int
	// Token is the previous page's next token; empty for the first page.
	Token string
}

// ErrBadToken means a page token that no listing returned.
var ErrBadToken = errors.New("page token not valid")

// The bounds of the index's sort key: every key is 13 digits, '#' and an
// id, so "0" sorts before every one and "~" after.
const (
	lowest  = "0"
	highest = "~"
)

var tokenPattern = regexp.MustCompile(`^[0-9]{13}#.+$`)

// List returns the ids of a page of jobs, newest first (by creation time,
// then id descending), and the token of the next page ("" after the
// last). It reads the jobs-by-state index: for each state, one Query of at
// most Limit+1 keys below the previous page's last, merged by time. A page
// thus costs the same whatever the number of jobs in the table; a job
// whose state changes between two pages may be seen twice or not at all,
// as in any listing that is not a snapshot.
func (s *Store) List(ctx context.Context, f ListFilter) (ids []string, next string, err error) {
	if f.Limit < 1 {
		return nil, "", fmt.Errorf("list jobs: limit %d: want at least 1", f.Limit)
	}
	lo, hi := lowest, highest
	if !f.After.IsZero() {
		lo = tablelayout.JobsIndexBound(f.After.UnixMilli())
	}
	if !f.Before.IsZero() {
		hi = tablelayout.JobsIndexBound(f.Before.UnixMilli())
	}
	cursor := ""
	if f.Token != "" {
		b, err := base64.RawURLEncoding.DecodeString(f.Token)
		if err != nil || !tokenPattern.Match(b) {
			return nil, "", ErrBadToken
		}
		cursor = string(b)
		hi = min(hi, cursor)
	}
	if lo > hi {
		return nil, "", nil
	}
	states := f.States
	if len(states) == 0 {
		states = ListStates
	}
	var keys []string
	more := false
	for _, st := range slices.Compact(slices.Sorted(slices.Values(states))) {
		got, truncated, err := s.listState(ctx, st, lo, hi, f.Limit+1)
		if err != nil {
			return nil, "", err
		}
		more = more || truncated
		for _, k := range got {
			// BETWEEN includes its bounds; the cursor is the previous
			// page's last job.
			if k != cursor {
				keys = append(keys, k)
			}
		}
	}
	slices.SortFunc(keys, func(a, b string) int { return cmp.Compare(b, a) })
	if len(keys) > f.Limit {
		keys, more = keys[:f.Limit], true
	}
	for _, k := range keys {
		ids = append(ids, tablelayout.JobsIndexJobID(k))
	}
	if more && len(keys) > 0 {
		next = base64.RawURLEncoding.EncodeToString([]byte(keys[len(keys)-1]))
	}
	return ids, next, nil
}

// listState reads up to limit index keys of state st between lo and hi,
// newest first; truncated says the index may hold more.
func (s *Store) listState(ctx context.Context, st spoolv1.JobState, lo, hi string, limit int) (keys []string, truncated bool, err error) {
	out, err := s.db.Query(ctx, &dynamodb.QueryInput{
		TableName:              aws.String(s.table),
		IndexName:              aws.String(tablelayout.JobsIndex),
		KeyConditionExpression: aws.String("#state = :state AND #created BETWEEN :lo AND :hi"),
		ExpressionAttributeNames: map[string]string{
			"#state": tablelayout.JobsIndexPK, "#created": tablelayout.JobsIndexSK,
		},
		ExpressionAttributeValues: map[string]types.AttributeValue{
			":state": str(stateName(st)), ":lo": str(lo), ":hi": str(hi),
		},
		ScanIndexForward: aws.Bool(false),
		Limit:            aws.Int32(int32(limit)),
	})
	if err != nil {
		return nil, false, fmt.Errorf("list %s jobs: %w", stateName(st), err)
	}
	for _, item := range out.Items {
		if v, ok := item[tablelayout.JobsIndexSK].(*types.AttributeValueMemberS); ok {
			keys = append(keys, v.Value)
		}
	}
	return keys, len(out.LastEvaluatedKey) > 0 || len(keys) >= limit, nil
}

package main

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	ddbtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/spoolhq/spool/platform/tablelayout"
)

// legacyKeysMode is the -ledger-legacy-keys flag: whether each claim also
// looks for its record under the key it had before ledger keys were
// namespaced. Auto asks the table: only one that may hold records from
// before needs the extra read per row.
type legacyKeysMode int

const (
	legacyKeysAuto legacyKeysMode = iota
	legacyKeysOn
	legacyKeysOff
)

func (m legacyKeysMode) String() string {
	switch m {
	case legacyKeysOn:
		return "on"
	case legacyKeysOff:
		return "off"
	}
	return "auto"
}

// Set takes auto, on or off, and the true and false the flag took when it
// was a boolean (as on and off), so existing deployments keep their
// setting.
func (m *legacyKeysMode) Set(v string) error {
	switch v {
	case "auto":
		*m = legacyKeysAuto
		return nil
	case "on":
		*m = legacyKeysOn
		return nil
	case "off":
		*m = legacyKeysOff
		return nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return fmt.Errorf("%q: want auto, on or off", v)
	}
	if b {
		*m = legacyKeysOn
	} else {
		*m = legacyKeysOff
	}
	return nil
}

// layoutReader is the part of the DynamoDB client legacyKeys uses.
type layoutReader interface {
	GetItem(ctx context.Context, in *dynamodb.GetItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.GetItemOutput, error)
}

// legacyKeys decides whether claims look for records under their former
// keys. On and off are taken as said. Auto reads the table's layout item,
// consistently, so that a table provisioned a moment ago is seen as it
// is: a table that began with namespaced keys holds no record under a
// former key, so no claim looks for one; a table without the item (made
// before the item existed, or by infrastructure code that did not write
// it) may, so every claim does. A failed read is an error: a table that
// cannot be read now is not taken for a new one, which would resend rows
// settled under former keys, and the dispatcher does not start.
func legacyKeys(ctx context.Context, db layoutReader, table string, mode legacyKeysMode, log *slog.Logger) (bool, error) {
	switch mode {
	case legacyKeysOn:
		return true, nil
	case legacyKeysOff:
		return false, nil
	}
	ctx, cancel := context.WithTimeout(ctx, awsCallTimeout)
	defer cancel()
	out, err := db.GetItem(ctx, &dynamodb.GetItemInput{
		TableName: aws.String(table), Key: tablelayout.Layout().Item(), ConsistentRead: aws.Bool(true),
	})
	if err != nil {
		return false, fmt.Errorf("read the layout item of table %s for -ledger-legacy-keys=auto (set on or off to start without it): %w", table, err)
	}
	if out.Item == nil {
		log.InfoContext(ctx, "ledger legacy keys on",
			"table", table,
			"what", "each claim also looks for its record under its key from before keys were namespaced: one more consistent read per row",
			"why", "the table has no layout item (pk META, sk LAYOUT), so it may hold ledger records written before; tables spool init creates have one",
			"turn_off", "set SPOOL_LEDGER_LEGACY_KEYS=off once -ledger-retention has passed since the upgrade and no UNKNOWN row of that time is left; a new table that never held such records can be given its layout item instead (deploy/ecs/README.md)")
		return true, nil
	}
	keys, _ := out.Item[tablelayout.LayoutLedgerKeys].(*ddbtypes.AttributeValueMemberS)
	if keys == nil || keys.Value != tablelayout.LedgerKeysNamespaced {
		// A format this dispatcher does not know was written by a newer
		// Spool, or by hand: neither guess is safe.
		return false, fmt.Errorf("table %s: layout item's %s is %s, want %q; set -ledger-legacy-keys on or off", table, tablelayout.LayoutLedgerKeys, describe(out.Item[tablelayout.LayoutLedgerKeys]), tablelayout.LedgerKeysNamespaced)
	}
	return false, nil
}

// describe names an attribute value for an error.
func describe(v ddbtypes.AttributeValue) string {
	switch v := v.(type) {
	case nil:
		return "missing"
	case *ddbtypes.AttributeValueMemberS:
		return strconv.Quote(v.Value)
	}
	return fmt.Sprintf("of type %T", v)
}

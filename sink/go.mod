module github.com/spoolhq/spool/sink

go 1.26.0

replace (
	github.com/spoolhq/spool/gen => ../gen
	github.com/spoolhq/spool/platform => ../platform
)

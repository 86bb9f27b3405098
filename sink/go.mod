module github.com/spoolhq/spool/sink

go 1.26.0

replace (
	github.com/spoolhq/spool/gen => ../gen
	github.com/spoolhq/spool/platform => ../platform
)

require (
	github.com/spoolhq/spool/platform v0.0.0
	github.com/stretchr/testify v1.12.1
)

require go.yaml.in/yaml/v3 v3.0.5 // indirect

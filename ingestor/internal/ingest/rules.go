package ingest

import (
	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
	"github.com/spoolhq/spool/platform/auth"
)

// Rules says which permissions admit a call to each IngestService method.
// GetJob admits a submitter too; the handler then shows it only the jobs
// it submitted. The auth interceptor refuses a method missing here.
var Rules = auth.Rules{
	spoolv1.IngestService_StreamFile_FullMethodName:   {auth.PermSubmit},
	spoolv1.IngestService_GetJob_FullMethodName:       {auth.PermView, auth.PermSubmit},
	spoolv1.IngestService_ListProfiles_FullMethodName: {auth.PermView},
}

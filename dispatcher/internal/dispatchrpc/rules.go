package dispatchrpc

import (
	spoolv1 "github.com/spoolhq/spool/gen/spool/v1"
	"github.com/spoolhq/spool/platform/auth"
)

// Rules says which permission each DispatchService method needs. The auth
// interceptor refuses a method missing here, so a new RPC is closed until
// it gets a line.
var Rules = auth.Rules{
	spoolv1.DispatchService_WatchJob_FullMethodName:            {auth.PermView},
	spoolv1.DispatchService_ReportJob_FullMethodName:           {auth.PermView},
	spoolv1.DispatchService_GetDispatcherStatus_FullMethodName: {auth.PermView},
	spoolv1.DispatchService_ListDeadLetters_FullMethodName:     {auth.PermView},
	spoolv1.DispatchService_ListOpenJobs_FullMethodName:        {auth.PermView},
	spoolv1.DispatchService_PauseJob_FullMethodName:            {auth.PermOperate},
	spoolv1.DispatchService_ResumeJob_FullMethodName:           {auth.PermOperate},
	spoolv1.DispatchService_CancelJob_FullMethodName:           {auth.PermOperate},
	spoolv1.DispatchService_ResolveTransaction_FullMethodName:  {auth.PermResolve},
	spoolv1.DispatchService_RedriveDeadLetters_FullMethodName:  {auth.PermRedrive},
}

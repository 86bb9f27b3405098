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
	spoolv1.DispatchService_UpdateJob_FullMethodName:           {auth.PermOperate},
	spoolv1.DispatchService_ListPendingRequests_FullMethodName: {auth.PermView},
	spoolv1.DispatchService_ListAuditEvents_FullMethodName:     {auth.PermView},
	spoolv1.DispatchService_ListJobs_FullMethodName:            {auth.PermView},
	// A dry run's rendering shows the caller's own rows as the third party
	// would receive them (secrets redacted): whoever may submit may see it.
	spoolv1.DispatchService_RenderRequests_FullMethodName: {auth.PermSubmit, auth.PermView},
	// The handler then checks the permission of the action approved.
	spoolv1.DispatchService_ApproveRequest_FullMethodName: {auth.PermResolve, auth.PermRedrive},
}

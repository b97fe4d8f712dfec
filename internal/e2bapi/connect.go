package e2bapi

import (
	"context"
	"time"

	"github.com/hearth-sandbox/hearth/internal/service"
	"github.com/hearth-sandbox/hearth/internal/store"
)

// connectOnService is Connector built from existing service calls. It is
// not atomic (a pause landing between the read and the resume makes the
// resume fail with a conflict the client may retry); a native
// service.ConnectSandbox should replace it.
type connectOnService struct {
	svc Service
	now func() time.Time
}

var _ Connector = connectOnService{}

func (c connectOnService) ConnectSandbox(ctx context.Context, p service.Principal, id string, timeoutS int) (store.Sandbox, bool, error) {
	sb, err := c.svc.GetSandbox(ctx, p, id)
	if err != nil {
		return store.Sandbox{}, false, err
	}
	resumed := false
	switch sb.Status {
	case store.StatusRunning:
	case store.StatusPaused:
		if sb, err = c.svc.ResumeSandbox(ctx, p, id); err != nil {
			return store.Sandbox{}, false, err
		}
		resumed = true
	default:
		return store.Sandbox{}, false, service.Conflict("sandbox %s is %s; retry when it settles", id, sb.Status)
	}
	// E2B's connect only ever extends the time to live.
	if timeoutS > 0 && c.now().Add(time.Duration(timeoutS)*time.Second).After(sb.EndAt) {
		token := sb.AccessToken
		if sb, err = c.svc.SetSandboxTimeout(ctx, p, id, timeoutS); err != nil {
			return store.Sandbox{}, false, err
		}
		if sb.AccessToken == "" {
			sb.AccessToken = token
		}
	}
	return sb, resumed, nil
}

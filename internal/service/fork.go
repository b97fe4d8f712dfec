package service

import (
	"context"
	"strings"
	"sync"

	"github.com/hearth-sandbox/hearth/internal/sandbox"
	"github.com/hearth-sandbox/hearth/internal/store"
)

// Fork bounds (E2B's: 1–100 forks per request).
const (
	MinForkCount = 1
	MaxForkCount = 100
)

// ForkResult is one requested fork: the new sandbox, or why it failed.
type ForkResult struct {
	Sandbox store.Sandbox
	Err     error
}

// ForkSandbox captures a running sandbox once (a snapshot template; the
// source is paused only for the capture and keeps its ID, processes and
// end time) and spawns count sandboxes from it, concurrently. Each fork
// succeeds or fails on its own; the error return is for failures before any
// fork was attempted.
// The capture is a snapshot template named fork-<source>-<random>: it is
// listed with the team's snapshots and can be deleted once its forks are
// gone.
func (s *Service) ForkSandbox(ctx context.Context, p Principal, id string, count, timeoutS int) (store.Template, []ForkResult, error) {
	if err := inRange("count", count, MinForkCount, MaxForkCount); err != nil {
		return store.Template{}, nil, err
	}
	// Checked before the capture, so a bad timeout costs no pause.
	if err := inRange("timeout_s", timeoutS, MinTimeoutS, MaxTimeoutS); err != nil {
		return store.Template{}, nil, err
	}
	src, err := s.GetSandbox(ctx, p, id)
	if err != nil {
		return store.Template{}, nil, err
	}
	if src.Status != sandbox.StateRunning {
		return store.Template{}, nil, Conflict("sandbox %s is %s; fork a running sandbox", src.ID, src.Status)
	}
	name := "fork-" + strings.ToLower(src.ID) + "-" + strings.ToLower(store.NewShortID()[:8])
	tpl, err := s.CreateSnapshot(ctx, p, src.ID, name)
	if err != nil {
		return store.Template{}, nil, err
	}
	allow := src.AllowInternet
	out := make([]ForkResult, count)
	var wg sync.WaitGroup
	for i := range out {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sb, err := s.CreateSandbox(ctx, p, CreateSandboxInput{
				Template: tpl.ID, TimeoutS: &timeoutS, Metadata: src.Metadata,
				AutoPause: src.AutoPause, AutoResume: src.AutoResume, AllowInternet: &allow,
			})
			out[i] = ForkResult{Sandbox: sb, Err: err}
		}()
	}
	wg.Wait()
	s.log.InfoContext(ctx, "sandbox forked", "sandbox_id", src.ID, "template_id", tpl.ID, "count", count)
	return tpl, out, nil
}

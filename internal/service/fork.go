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
// The capture is a snapshot template named fork-<source>-<random>, listed
// with the team's snapshots and deleted with the last sandbox made from it
// (at once when every fork failed).
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
	tpl, err := s.createSnapshot(ctx, p, src.ID, name, true)
	if err != nil {
		return store.Template{}, nil, err
	}
	// A fork destroyed while its siblings are still being created must not
	// take the template from under them.
	s.forks.begin(tpl.ID)
	defer func() {
		s.forks.end(tpl.ID)
		s.releaseAutoTemplate(ctx, p.TeamID, tpl.ID)
	}()
	allow := src.AllowInternet
	out := make([]ForkResult, count)
	var wg sync.WaitGroup
	for i := range out {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id := store.NewShortID()
			sb, err := s.CreateSandbox(ctx, p, CreateSandboxInput{
				Template: tpl.ID, TimeoutS: &timeoutS, Metadata: src.Metadata,
				AutoPause: src.AutoPause, AutoResume: src.AutoResume, AllowInternet: &allow, id: id,
			})
			if err != nil {
				s.dropFailedFork(ctx, id)
			}
			out[i] = ForkResult{Sandbox: sb, Err: err}
		}()
	}
	wg.Wait()
	s.log.InfoContext(ctx, "sandbox forked", "sandbox_id", src.ID, "template_id", tpl.ID, "count", count)
	return tpl, out, nil
}

// dropFailedFork destroys what a failed fork left (an error row, maybe a
// half-made VM): nobody else knows its ID, and it would keep the capture
// template alive.
func (s *Service) dropFailedFork(ctx context.Context, id string) {
	ctx = context.WithoutCancel(ctx)
	sb, err := s.store.GetSandboxByID(ctx, id)
	if err != nil {
		return // never recorded, or already gone
	}
	if err := s.destroy(ctx, sb); err != nil {
		s.log.WarnContext(ctx, "destroy failed fork", "sandbox_id", id, "err", err)
	}
}

// forkSpawns counts the forks in progress per capture template.
type forkSpawns struct {
	mu sync.Mutex
	n  map[string]int
}

func (f *forkSpawns) begin(id string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.n == nil {
		f.n = map[string]int{}
	}
	f.n[id]++
}

func (f *forkSpawns) end(id string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.n[id]--; f.n[id] <= 0 {
		delete(f.n, id)
	}
}

func (f *forkSpawns) spawning(id string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.n[id] > 0
}

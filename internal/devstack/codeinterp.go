package devstack

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"time"

	"github.com/hearth-sandbox/hearth/internal/citemplate"
	"github.com/hearth-sandbox/hearth/internal/codeinterp"
	"github.com/hearth-sandbox/hearth/internal/image"
)

// codeInterpreterStateFile records what code-interpreter-v1 was baked from.
const codeInterpreterStateFile = "code-interpreter-template.json"

// startCodeInterpreterBake bakes code-interpreter-v1 in the background
// when the image is built; Close cancels and waits for it.
func (s *Stack) startCodeInterpreterBake(ctx context.Context) {
	m, err := image.ReadManifest(s.DataDir, image.CodeInterpreter)
	if err != nil {
		s.log.Info("code interpreter: no code-interpreter image, so no "+codeinterp.TemplateName+
			" template (build it with: hearth image build --only code-interpreter)", "err", err)
		return
	}
	bctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s.bakeCancel, s.bakeDone = cancel, make(chan struct{})
	go func() {
		defer close(s.bakeDone)
		err := citemplate.Ensure(bctx, citemplate.Options{
			Service: s.ControlPlane.Service, Store: s.ControlPlane.Store,
			ImageVersion: m.InputsHash, StateFile: filepath.Join(s.DataDir, codeInterpreterStateFile),
			Ready: s.codeInterpreterReady, Logger: s.log,
		})
		if err != nil && !errors.Is(bctx.Err(), context.Canceled) {
			s.log.Error("code interpreter: no "+codeinterp.TemplateName+" template", "err", err)
		}
	}()
}

// codeInterpreterReady polls the sandbox's code interpreter /health at the
// guest's address on this host until it answers 200: the server is up and
// its default kernel warm. Not through the public listener: with --domain
// that is HTTPS for names this process has no reason to trust or resolve.
func (s *Stack) codeInterpreterReady(ctx context.Context, sandboxID string) error {
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true, Proxy: nil}}
	var last error
	for {
		addr, err := s.Agent.SandboxAddr(sandboxID)
		if err == nil {
			var req *http.Request
			req, err = http.NewRequestWithContext(ctx, http.MethodGet, "http://"+net.JoinHostPort(addr, strconv.Itoa(codeinterp.Port))+"/health", nil)
			if err != nil {
				return err
			}
			var resp *http.Response
			if resp, err = client.Do(req); err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					return nil
				}
				err = fmt.Errorf("/health: %s", resp.Status)
			}
		}
		last = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last: %v)", ctx.Err(), last)
		case <-time.After(250 * time.Millisecond):
		}
	}
}

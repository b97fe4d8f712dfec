package dashboard

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"sync"
	"time"

	"connectrpc.com/connect"
	"github.com/coder/websocket"

	procrpc "github.com/hearth-sandbox/hearth/gen/envd/process"
	"github.com/hearth-sandbox/hearth/internal/envdclient"
	"github.com/hearth-sandbox/hearth/internal/service"
)

// TerminalBackend finds the envd of a sandbox for a browser session. It is
// what the dashboard needs from the control plane for the terminal and the
// file browser; ServiceBackend implements it with the service and the host
// pool.
type TerminalBackend interface {
	// Envd authenticates sessionToken (the session JWT) acting for teamID
	// ("" = the user's own team), checks that sandboxID is that team's and
	// running, and returns a client for its envd with the sandbox's access
	// token attached. Errors should be *service.Error values: their Kind
	// picks the HTTP status (another team's sandbox: KindNotFound).
	Envd(ctx context.Context, sessionToken, teamID, sandboxID string) (*envdclient.Client, error)
}

// Terminal protocol on the WebSocket, kept minimal so any client can speak it:
//   - browser → server, binary frame: bytes typed into the terminal.
//   - browser → server, text frame: JSON control message,
//     {"type":"resize","cols":N,"rows":N} or {"type":"input","data":"..."}.
//   - server → browser, binary frame: terminal output.
//   - server → browser, text frame: {"type":"ready","pid":N} once the shell
//     runs, {"type":"exit","exit_code":N,"status":"..."} when it ends,
//     {"type":"error","message":"..."} on a failure; the socket then closes.
//
// The initial size comes from ?cols=&rows= (default 80x24).
type controlMsg struct {
	Type string `json:"type"`
	Cols uint32 `json:"cols,omitempty"`
	Rows uint32 `json:"rows,omitempty"`
	Data string `json:"data,omitempty"`
}

const (
	maxTermDim    = 1000
	termReadLimit = 64 << 10
	killGrace     = 5 * time.Second
)

// terminal: GET /ws/sandboxes/{id}/terminal?csrf=&cols=&rows=&team=.
// Everything is checked before the upgrade so failures are plain HTTP
// statuses the page can show.
func (h *handler) terminal(w http.ResponseWriter, r *http.Request) {
	jwt := sessionToken(r)
	if jwt == "" {
		writeError(w, http.StatusUnauthorized, "not logged in")
		return
	}
	// Browsers send cookies on cross-site WebSocket handshakes in some
	// configurations; Origin and the CSRF token rule those out.
	if r.Header.Get("Origin") == "" || !sameOrigin(r) {
		writeError(w, http.StatusForbidden, "cross-origin WebSocket refused")
		return
	}
	if !csrfOK(r, r.URL.Query().Get("csrf")) {
		writeError(w, http.StatusForbidden, "missing or invalid CSRF token (?csrf=)")
		return
	}
	if h.term == nil {
		writeError(w, http.StatusNotImplemented, "terminals are not available on this server")
		return
	}
	cols, rows := dim(r, "cols", 80), dim(r, "rows", 24)
	cli, err := h.term.Envd(r.Context(), jwt, r.URL.Query().Get("team"), r.PathValue("id"))
	if err != nil {
		h.backendError(w, r, err)
		return
	}
	conn, err := websocket.Accept(w, r, nil) // also rejects a foreign Origin
	if err != nil {
		h.log.WarnContext(r.Context(), "dashboard: websocket upgrade", "err", err)
		return
	}
	conn.SetReadLimit(termReadLimit)
	h.bridge(r.Context(), conn, cli, cols, rows)
}

func dim(r *http.Request, name string, def uint32) uint32 {
	n, err := strconv.ParseUint(r.URL.Query().Get(name), 10, 32)
	if err != nil || n == 0 || n > maxTermDim {
		return def
	}
	return uint32(n)
}

// bridge runs a shell on a PTY in the sandbox and joins it to conn until
// either side ends. The shell is killed when the browser goes away: an
// abandoned terminal must not keep running in the sandbox.
func (h *handler) bridge(parent context.Context, conn *websocket.Conn, cli *envdclient.Client, cols, rows uint32) {
	ctx, cancel := context.WithCancel(parent)
	defer cancel()

	stdin := true
	stream, err := cli.Process().Start(ctx, connect.NewRequest(&procrpc.StartRequest{
		Process: &procrpc.ProcessConfig{
			Cmd:  h.shell[0],
			Args: h.shell[1:],
			Envs: map[string]string{"TERM": "xterm-256color", "COLORTERM": "truecolor"},
		},
		Pty:   &procrpc.PTY{Size: &procrpc.PTY_Size{Cols: cols, Rows: rows}},
		Stdin: &stdin,
	}))
	if err != nil {
		h.closeWith(ctx, conn, "starting the shell failed: "+err.Error())
		return
	}
	defer stream.Close()

	var pid uint32
	if !stream.Receive() {
		h.closeWith(ctx, conn, "starting the shell failed: "+errString(stream.Err()))
		return
	}
	if st := stream.Msg().GetEvent().GetStart(); st != nil {
		pid = st.GetPid()
	} else {
		h.closeWith(ctx, conn, "envd did not report the shell's start")
		return
	}
	sel := &procrpc.ProcessSelector{Selector: &procrpc.ProcessSelector_Pid{Pid: pid}}
	defer func() {
		// Kill the shell (and so its session) unless it already ended.
		kctx, kcancel := context.WithTimeout(context.WithoutCancel(parent), killGrace)
		defer kcancel()
		_, _ = cli.Process().SendSignal(kctx, connect.NewRequest(&procrpc.SendSignalRequest{
			Process: sel, Signal: procrpc.Signal_SIGNAL_SIGKILL,
		}))
	}()
	if err := writeControl(ctx, conn, map[string]any{"type": "ready", "pid": pid}); err != nil {
		return
	}

	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // envd → browser
		defer wg.Done()
		defer cancel()
		for stream.Receive() {
			ev := stream.Msg().GetEvent()
			switch {
			case ev.GetData() != nil:
				b := ev.GetData().GetPty()
				if b == nil {
					b = append(ev.GetData().GetStdout(), ev.GetData().GetStderr()...)
				}
				if len(b) > 0 {
					if err := conn.Write(ctx, websocket.MessageBinary, b); err != nil {
						return
					}
				}
			case ev.GetEnd() != nil:
				end := ev.GetEnd()
				_ = writeControl(ctx, conn, map[string]any{"type": "exit", "exit_code": end.GetExitCode(), "status": end.GetStatus()})
				conn.Close(websocket.StatusNormalClosure, "shell exited")
				return
			}
		}
		if ctx.Err() == nil {
			h.closeWith(ctx, conn, "lost the connection to the sandbox: "+errString(stream.Err()))
		}
	}()

	// browser → envd, until the socket closes or the output side ends.
	for {
		typ, data, err := conn.Read(ctx)
		if err != nil {
			break
		}
		var in []byte
		switch typ {
		case websocket.MessageBinary:
			in = data
		case websocket.MessageText:
			var m controlMsg
			if json.Unmarshal(data, &m) != nil {
				continue
			}
			switch m.Type {
			case "input":
				in = []byte(m.Data)
			case "resize":
				if m.Cols == 0 || m.Rows == 0 || m.Cols > maxTermDim || m.Rows > maxTermDim {
					continue
				}
				_, err := cli.Process().Update(ctx, connect.NewRequest(&procrpc.UpdateRequest{
					Process: sel, Pty: &procrpc.PTY{Size: &procrpc.PTY_Size{Cols: m.Cols, Rows: m.Rows}},
				}))
				if err != nil && ctx.Err() == nil {
					h.log.WarnContext(ctx, "dashboard: terminal resize", "err", err)
				}
			}
		}
		if len(in) == 0 {
			continue
		}
		_, err = cli.Process().SendInput(ctx, connect.NewRequest(&procrpc.SendInputRequest{
			Process: sel, Input: &procrpc.ProcessInput{Input: &procrpc.ProcessInput_Pty{Pty: in}},
		}))
		if err != nil {
			if ctx.Err() == nil {
				h.closeWith(ctx, conn, "sending input failed: "+err.Error())
			}
			break
		}
	}
	cancel()
	wg.Wait()
	conn.CloseNow()
}

func (h *handler) closeWith(ctx context.Context, conn *websocket.Conn, msg string) {
	h.log.WarnContext(ctx, "dashboard: terminal", "err", msg)
	_ = writeControl(ctx, conn, map[string]any{"type": "error", "message": msg})
	conn.Close(websocket.StatusInternalError, "terminal failed")
}

func writeControl(ctx context.Context, conn *websocket.Conn, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return conn.Write(ctx, websocket.MessageText, b)
}

func errString(err error) string {
	if err == nil {
		return "stream ended"
	}
	return err.Error()
}

// backendError maps a TerminalBackend error to the API's statuses.
func (h *handler) backendError(w http.ResponseWriter, r *http.Request, err error) {
	status := http.StatusInternalServerError
	msg := "internal error"
	var se *service.Error
	if errors.As(err, &se) {
		msg = se.Message
		switch se.Kind {
		case service.KindInvalidArgument:
			status = http.StatusBadRequest
		case service.KindNotFound:
			status = http.StatusNotFound
		case service.KindConflict:
			status = http.StatusConflict
		case service.KindUnauthenticated:
			status = http.StatusUnauthorized
		case service.KindPermissionDenied:
			status = http.StatusForbidden
		case service.KindUnavailable:
			status = http.StatusServiceUnavailable
		}
	}
	if status >= 500 {
		h.log.ErrorContext(r.Context(), "dashboard: envd lookup", "path", r.URL.Path, "err", err)
	}
	writeError(w, status, msg)
}

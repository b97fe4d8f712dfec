// Package envdclient is the Go client the host agent uses to drive envd in a
// sandbox: health, /init, running commands over process.Start, and file
// transfer over /files.
package envdclient

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"

	fsrpc "github.com/hearth-sandbox/hearth/gen/envd/filesystem"
	"github.com/hearth-sandbox/hearth/gen/envd/filesystem/filesystemconnect"
	procrpc "github.com/hearth-sandbox/hearth/gen/envd/process"
	"github.com/hearth-sandbox/hearth/gen/envd/process/processconnect"
)

const (
	accessTokenHeader = "X-Access-Token"
	versionHeader     = "X-Envd-Version"
)

// Client talks to one envd. It is safe for concurrent use.
type Client struct {
	base string
	hc   *http.Client

	mu    sync.RWMutex
	token string

	proc processconnect.ProcessClient
	fs   filesystemconnect.FilesystemClient
}

// New returns a client for envd at baseURL (e.g. http://169.254.0.21:49983).
// hc nil means http.DefaultClient; opts are passed to the Connect clients
// (e.g. connect.WithProtoJSON()).
func New(baseURL, accessToken string, hc *http.Client, opts ...connect.ClientOption) *Client {
	if hc == nil {
		hc = http.DefaultClient
	}
	c := &Client{base: strings.TrimRight(baseURL, "/"), hc: hc, token: accessToken}
	opts = append([]connect.ClientOption{connect.WithInterceptors(tokenInterceptor{c})}, opts...)
	c.proc = processconnect.NewProcessClient(hc, c.base, opts...)
	c.fs = filesystemconnect.NewFilesystemClient(hc, c.base, opts...)
	return c
}

// AccessToken returns the token the client sends.
func (c *Client) AccessToken() string {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.token
}

// SetAccessToken changes the token the client sends.
func (c *Client) SetAccessToken(token string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.token = token
}

// Process returns the raw process.Process client (with the token attached).
func (c *Client) Process() processconnect.ProcessClient { return c.proc }

// Filesystem returns the raw filesystem.Filesystem client.
func (c *Client) Filesystem() filesystemconnect.FilesystemClient { return c.fs }

// tokenInterceptor adds X-Access-Token to every Connect call.
type tokenInterceptor struct{ c *Client }

func (t tokenInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		if tok := t.c.AccessToken(); tok != "" {
			req.Header().Set(accessTokenHeader, tok)
		}
		return next(ctx, req)
	}
}

func (t tokenInterceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return func(ctx context.Context, spec connect.Spec) connect.StreamingClientConn {
		conn := next(ctx, spec)
		if tok := t.c.AccessToken(); tok != "" {
			conn.RequestHeader().Set(accessTokenHeader, tok)
		}
		return conn
	}
}

func (t tokenInterceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return next
}

// Error is a non-success answer from an envd REST route.
type Error struct {
	Status  int
	Message string
}

func (e *Error) Error() string { return fmt.Sprintf("envd: HTTP %d: %s", e.Status, e.Message) }

func responseError(resp *http.Response) error {
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var parsed struct {
		Message string `json:"message"`
	}
	msg := strings.TrimSpace(string(body))
	if json.Unmarshal(body, &parsed) == nil && parsed.Message != "" {
		msg = parsed.Message
	}
	return &Error{Status: resp.StatusCode, Message: msg}
}

func (c *Client) newRequest(ctx context.Context, method, path string, q url.Values, body io.Reader) (*http.Request, error) {
	u := c.base + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return nil, fmt.Errorf("building %s %s: %w", method, path, err)
	}
	if tok := c.AccessToken(); tok != "" {
		req.Header.Set(accessTokenHeader, tok)
	}
	return req, nil
}

// Health checks /health and returns the version envd reports.
func (c *Client) Health(ctx context.Context) (string, error) {
	req, err := c.newRequest(ctx, http.MethodGet, "/health", nil, nil)
	if err != nil {
		return "", err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return "", fmt.Errorf("envd health: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent && resp.StatusCode != http.StatusOK {
		return "", responseError(resp)
	}
	return resp.Header.Get(versionHeader), nil
}

// InitRequest is the /init body.
type InitRequest struct {
	EnvVars        map[string]string `json:"envVars,omitempty"`
	AccessToken    string            `json:"accessToken,omitempty"`
	DefaultUser    string            `json:"defaultUser,omitempty"`
	DefaultWorkdir string            `json:"defaultWorkdir,omitempty"`
	// Timestamp, when set, makes envd set the guest clock (after a restore).
	Timestamp *time.Time `json:"timestamp,omitempty"`
}

// Init calls /init, authenticating with currentToken ("" for a fresh envd
// that has no token yet). On success a new AccessToken becomes the client's.
func (c *Client) Init(ctx context.Context, in InitRequest, currentToken string) error {
	body, err := json.Marshal(in)
	if err != nil {
		return fmt.Errorf("encoding init request: %w", err)
	}
	req, err := c.newRequest(ctx, http.MethodPost, "/init", nil, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Del(accessTokenHeader)
	if currentToken != "" {
		req.Header.Set(accessTokenHeader, currentToken)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("envd init: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent && resp.StatusCode != http.StatusOK {
		return responseError(resp)
	}
	if in.AccessToken != "" {
		c.SetAccessToken(in.AccessToken)
	}
	return nil
}

// ExecRequest describes a command to run.
type ExecRequest struct {
	Cmd  string
	Args []string
	Env  map[string]string
	Cwd  string
	// User is the OS user; "" means envd's default user.
	User string
	// Timeout bounds the command; envd kills it when it elapses. 0: none.
	Timeout time.Duration
	// Tag names the process for Connect/SendSignal by tag.
	Tag string
}

// ExecResult is a finished command's output.
type ExecResult struct {
	Pid      uint32
	Stdout   []byte
	Stderr   []byte
	ExitCode int
	// Status is envd's description, e.g. "exit status 1" or "signal: killed".
	Status string
}

// StreamHandlers receive a command's events as they arrive. Any may be nil.
type StreamHandlers struct {
	OnStart  func(pid uint32)
	OnStdout func([]byte)
	OnStderr func([]byte)
}

// Exec runs a command and collects its output. A non-zero exit is not an
// error; ExitCode is -1 when the command was killed by a signal.
func (c *Client) Exec(ctx context.Context, in ExecRequest) (ExecResult, error) {
	var stdout, stderr bytes.Buffer
	res, err := c.ExecStream(ctx, in, StreamHandlers{
		OnStdout: func(b []byte) { stdout.Write(b) },
		OnStderr: func(b []byte) { stderr.Write(b) },
	})
	res.Stdout, res.Stderr = stdout.Bytes(), stderr.Bytes()
	return res, err
}

// ExecStream runs a command, calling h for each event as it is streamed;
// the returned result has no Stdout/Stderr (they went to h).
func (c *Client) ExecStream(ctx context.Context, in ExecRequest, h StreamHandlers) (ExecResult, error) {
	if in.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, in.Timeout)
		defer cancel()
	}
	cfg := &procrpc.ProcessConfig{Cmd: in.Cmd, Args: in.Args, Envs: in.Env}
	if in.Cwd != "" {
		cfg.Cwd = &in.Cwd
	}
	stdin := false
	msg := &procrpc.StartRequest{Process: cfg, Stdin: &stdin}
	if in.Tag != "" {
		msg.Tag = &in.Tag
	}
	req := connect.NewRequest(msg)
	if in.User != "" {
		req.Header().Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(in.User+":")))
	}
	stream, err := c.proc.Start(ctx, req)
	if err != nil {
		return ExecResult{}, fmt.Errorf("starting %s: %w", in.Cmd, err)
	}
	defer stream.Close()
	var res ExecResult
	for stream.Receive() {
		switch ev := stream.Msg().GetEvent().GetEvent().(type) {
		case *procrpc.ProcessEvent_Start:
			res.Pid = ev.Start.GetPid()
			if h.OnStart != nil {
				h.OnStart(res.Pid)
			}
		case *procrpc.ProcessEvent_Data:
			switch out := ev.Data.GetOutput().(type) {
			case *procrpc.ProcessEvent_DataEvent_Stdout:
				if h.OnStdout != nil {
					h.OnStdout(out.Stdout)
				}
			case *procrpc.ProcessEvent_DataEvent_Stderr:
				if h.OnStderr != nil {
					h.OnStderr(out.Stderr)
				}
			case *procrpc.ProcessEvent_DataEvent_Pty:
				if h.OnStdout != nil {
					h.OnStdout(out.Pty)
				}
			}
		case *procrpc.ProcessEvent_End:
			res.ExitCode = int(ev.End.GetExitCode())
			res.Status = ev.End.GetStatus()
			return res, nil
		}
	}
	if err := stream.Err(); err != nil {
		return res, fmt.Errorf("running %s: %w", in.Cmd, err)
	}
	return res, errors.New("envd closed the process stream before the end event")
}

// ReadFile downloads path; the caller closes the reader.
func (c *Client) ReadFile(ctx context.Context, path string) (io.ReadCloser, error) {
	req, err := c.newRequest(ctx, http.MethodGet, "/files", url.Values{"path": {path}}, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		return nil, fmt.Errorf("reading %s: %w", path, responseError(resp))
	}
	return resp.Body, nil
}

// WriteFile uploads r to path as a raw octet-stream body (streamed, not
// buffered), creating parent directories.
func (c *Client) WriteFile(ctx context.Context, path string, r io.Reader) error {
	req, err := c.newRequest(ctx, http.MethodPost, "/files", url.Values{"path": {path}}, r)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("writing %s: %w", path, responseError(resp))
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	return nil
}

// Stat is a convenience over filesystem.Stat.
func (c *Client) Stat(ctx context.Context, path string) (*fsrpc.EntryInfo, error) {
	resp, err := c.fs.Stat(ctx, connect.NewRequest(&fsrpc.StatRequest{Path: path}))
	if err != nil {
		return nil, fmt.Errorf("stat %s: %w", path, err)
	}
	return resp.Msg.GetEntry(), nil
}

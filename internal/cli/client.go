// Package cli is the user side of hearth's /v1 REST API: a typed client,
// where credentials come from (login file, environment, flags), and the
// terminal output helpers (tables, JSON, spinners, byte progress bars) the
// `hearth` commands share.
//
// The wire types here are written from internal/api/openapi.yaml, the
// contract; the client does not import the server packages, so it stays
// what a third party would write and the tests against the real handler
// catch any drift.
package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"

	"github.com/hearth-sandbox/hearth/internal/apiwire"
)

// Client calls one hearth control plane. The zero HTTP uses
// http.DefaultClient. Sandbox, template and snapshot calls authenticate with
// APIKey when set, else with Token; user calls (api keys, me) need Token.
type Client struct {
	BaseURL string
	APIKey  string
	Token   string
	HTTP    *http.Client
	// UserAgent is sent on every request (default "hearth-cli").
	UserAgent string
}

// NewClient returns a client for baseURL ("http://host:port", with or
// without a trailing slash).
func NewClient(baseURL, apiKey, token string) *Client {
	return &Client{BaseURL: strings.TrimRight(baseURL, "/"), APIKey: apiKey, Token: token}
}

// ---- wire types: internal/apiwire; only the query below is the CLI's ----

// SandboxFilter narrows GET /v1/sandboxes.
type SandboxFilter struct {
	Statuses []string
	Metadata map[string]string
	Limit    int
}

// ---- calls ----

// Healthz calls GET /healthz (no credentials).
func (c *Client) Healthz(ctx context.Context) error {
	return c.do(ctx, http.MethodGet, "/healthz", authNone, nil, nil)
}

// Login exchanges email and password for a session token.
func (c *Client) Login(ctx context.Context, email, password string) (string, error) {
	var out apiwire.Token
	err := c.do(ctx, http.MethodPost, "/v1/auth/login", authNone, apiwire.Credentials{Email: email, Password: password}, &out)
	return out.Token, err
}

// Signup creates a user and their team and returns a session token.
func (c *Client) Signup(ctx context.Context, email, password string) (string, error) {
	var out apiwire.Signup
	err := c.do(ctx, http.MethodPost, "/v1/auth/signup", authNone, apiwire.Credentials{Email: email, Password: password}, &out)
	return out.Token, err
}

// Me returns the signed-in user (needs Token).
func (c *Client) Me(ctx context.Context) (apiwire.Me, error) {
	var out apiwire.Me
	return out, c.do(ctx, http.MethodGet, "/v1/me", authUser, nil, &out)
}

// CreateAPIKey creates a key; the result's Key is shown only now.
func (c *Client) CreateAPIKey(ctx context.Context, name string) (apiwire.APIKey, error) {
	var out apiwire.APIKey
	return out, c.do(ctx, http.MethodPost, "/v1/api-keys", authUser, apiwire.NewAPIKey{Name: name}, &out)
}

// ListAPIKeys lists the team's keys (no secrets).
func (c *Client) ListAPIKeys(ctx context.Context) ([]apiwire.APIKey, error) {
	var out []apiwire.APIKey
	return out, c.do(ctx, http.MethodGet, "/v1/api-keys", authUser, nil, &out)
}

// DeleteAPIKey deletes a key by ID.
func (c *Client) DeleteAPIKey(ctx context.Context, id string) error {
	return c.do(ctx, http.MethodDelete, "/v1/api-keys/"+url.PathEscape(id), authUser, nil, nil)
}

// CreateSandbox creates a sandbox and returns when it runs.
func (c *Client) CreateSandbox(ctx context.Context, in apiwire.CreateSandbox) (apiwire.Sandbox, error) {
	var out apiwire.Sandbox
	return out, c.do(ctx, http.MethodPost, "/v1/sandboxes", authTeam, in, &out)
}

// ListSandboxes lists the team's sandboxes.
func (c *Client) ListSandboxes(ctx context.Context, f SandboxFilter) ([]apiwire.Sandbox, error) {
	q := url.Values{}
	if len(f.Statuses) > 0 {
		q.Set("status", strings.Join(f.Statuses, ","))
	}
	if len(f.Metadata) > 0 {
		md := url.Values{}
		for k, v := range f.Metadata {
			md.Set(k, v)
		}
		q.Set("metadata", md.Encode())
	}
	if f.Limit > 0 {
		q.Set("limit", strconv.Itoa(f.Limit))
	}
	path := "/v1/sandboxes"
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	var out []apiwire.Sandbox
	return out, c.do(ctx, http.MethodGet, path, authTeam, nil, &out)
}

// GetSandbox returns one sandbox.
func (c *Client) GetSandbox(ctx context.Context, id string) (apiwire.Sandbox, error) {
	var out apiwire.Sandbox
	return out, c.do(ctx, http.MethodGet, sandboxPath(id, ""), authTeam, nil, &out)
}

// DeleteSandbox destroys a sandbox.
func (c *Client) DeleteSandbox(ctx context.Context, id string) error {
	return c.do(ctx, http.MethodDelete, sandboxPath(id, ""), authTeam, nil, nil)
}

// Exec runs a command to completion in a sandbox.
func (c *Client) Exec(ctx context.Context, id string, in apiwire.ExecRequest) (apiwire.ExecResult, error) {
	var out apiwire.ExecResult
	return out, c.do(ctx, http.MethodPost, sandboxPath(id, "/exec"), authTeam, in, &out)
}

// ExecStream runs a command in a sandbox, copying its stdout and stderr to
// the writers as the server streams them, and returns the exit code.
// Cancelling ctx closes the connection, which stops the command. A failure
// after output began (the host lost mid-command) is an *APIError like any
// other. A server that answers with the buffered JSON instead (one without
// streaming) works too: the output is written when the command ends.
func (c *Client) ExecStream(ctx context.Context, id string, in apiwire.ExecRequest, stdout, stderr io.Writer) (exitCode int, err error) {
	b, err := json.Marshal(in)
	if err != nil {
		return 0, fmt.Errorf("encode request: %w", err)
	}
	req, err := c.newRequest(ctx, http.MethodPost, sandboxPath(id, "/exec"), authTeam, bytes.NewReader(b))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", ndjson+", application/json;q=0.5")
	resp, err := c.send(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, decodeError(req, resp)
	}
	// A read failing because ctx ended (Ctrl-C) is that, not a lost server.
	fail := func(what string, err error) (int, error) {
		if ctxErr := ctx.Err(); ctxErr != nil {
			return 0, ctxErr
		}
		return 0, fmt.Errorf("%s %s: %s: %w", req.Method, req.URL.Path, what, err)
	}
	if mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); mt != ndjson {
		var res apiwire.ExecResult
		if err := json.NewDecoder(resp.Body).Decode(&res); err != nil {
			return fail("decode response", err)
		}
		if _, err := io.WriteString(stdout, res.Stdout); err != nil {
			return 0, err
		}
		if _, err := io.WriteString(stderr, res.Stderr); err != nil {
			return 0, err
		}
		return res.ExitCode, nil
	}
	dec := json.NewDecoder(resp.Body)
	for {
		var ev apiwire.ExecEvent
		if err := dec.Decode(&ev); err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return fail("output stream ended before the exit status", err)
		}
		switch ev.Type {
		case apiwire.EventStdout:
			_, err = io.WriteString(stdout, ev.Data)
		case apiwire.EventStderr:
			_, err = io.WriteString(stderr, ev.Data)
		case apiwire.EventExit:
			return ev.ExitCode, nil
		case apiwire.EventError:
			return 0, &APIError{Status: ev.Code, Message: ev.Message, Method: req.Method, Path: req.URL.Path}
		}
		// Unknown event types are skipped: newer servers may add some.
		if err != nil {
			return 0, err // our own output is gone (closed pipe): stop the command
		}
	}
}

const ndjson = "application/x-ndjson"

// PauseSandbox pauses a sandbox (idempotent).
func (c *Client) PauseSandbox(ctx context.Context, id string) (apiwire.Sandbox, error) {
	var out apiwire.Sandbox
	return out, c.do(ctx, http.MethodPost, sandboxPath(id, "/pause"), authTeam, nil, &out)
}

// ResumeSandbox resumes a sandbox (idempotent).
func (c *Client) ResumeSandbox(ctx context.Context, id string) (apiwire.Sandbox, error) {
	var out apiwire.Sandbox
	return out, c.do(ctx, http.MethodPost, sandboxPath(id, "/resume"), authTeam, nil, &out)
}

// SetTimeout makes the sandbox end seconds from now.
func (c *Client) SetTimeout(ctx context.Context, id string, seconds int) (apiwire.Sandbox, error) {
	var out apiwire.Sandbox
	return out, c.do(ctx, http.MethodPost, sandboxPath(id, "/timeout"), authTeam, apiwire.SetTimeout{TimeoutS: &seconds}, &out)
}

// SetNetwork replaces a sandbox's egress policy.
func (c *Client) SetNetwork(ctx context.Context, id string, n apiwire.Network) (apiwire.Sandbox, error) {
	var out apiwire.Sandbox
	return out, c.do(ctx, http.MethodPut, sandboxPath(id, "/network"), authTeam, n, &out)
}

// ReadFile opens a file in the sandbox for reading. size is the length the
// server announced, or -1. The caller closes the reader.
func (c *Client) ReadFile(ctx context.Context, id, path string) (rc io.ReadCloser, size int64, err error) {
	req, err := c.newRequest(ctx, http.MethodGet, filesPath(id, path), authTeam, nil)
	if err != nil {
		return nil, 0, err
	}
	resp, err := c.send(req)
	if err != nil {
		return nil, 0, err
	}
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		return nil, 0, decodeError(req, resp)
	}
	return resp.Body, resp.ContentLength, nil
}

// WriteFile uploads r as the file at path (replacing it). size is r's
// length when known (sent as Content-Length), or -1 to stream it chunked.
func (c *Client) WriteFile(ctx context.Context, id, path string, r io.Reader, size int64) error {
	req, err := c.newRequest(ctx, http.MethodPut, filesPath(id, path), authTeam, r)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	if size >= 0 {
		req.ContentLength = size
		if size == 0 {
			req.Body = http.NoBody
		}
	}
	return c.roundTrip(req, nil)
}

// ListTemplates lists the team's and the platform's templates.
func (c *Client) ListTemplates(ctx context.Context) ([]apiwire.Template, error) {
	var out []apiwire.Template
	return out, c.do(ctx, http.MethodGet, "/v1/templates", authTeam, nil, &out)
}

// CreateSnapshot snapshots a sandbox into a named template.
func (c *Client) CreateSnapshot(ctx context.Context, sandboxID, name string) (apiwire.Template, error) {
	var out apiwire.Template
	return out, c.do(ctx, http.MethodPost, "/v1/snapshots", authTeam, apiwire.CreateSnapshot{SandboxID: sandboxID, Name: name}, &out)
}

// ListSnapshots lists snapshot templates.
func (c *Client) ListSnapshots(ctx context.Context) ([]apiwire.Template, error) {
	var out []apiwire.Template
	return out, c.do(ctx, http.MethodGet, "/v1/snapshots", authTeam, nil, &out)
}

// DeleteSnapshot deletes a snapshot template by name.
func (c *Client) DeleteSnapshot(ctx context.Context, name string) error {
	return c.do(ctx, http.MethodDelete, "/v1/snapshots/"+url.PathEscape(name), authTeam, nil, nil)
}

// CreateVolume creates a volume of the team.
func (c *Client) CreateVolume(ctx context.Context, name string) (apiwire.Volume, error) {
	var out apiwire.Volume
	return out, c.do(ctx, http.MethodPost, "/v1/volumes", authTeam, apiwire.CreateVolume{Name: name}, &out)
}

// ListVolumes lists the team's volumes.
func (c *Client) ListVolumes(ctx context.Context) ([]apiwire.Volume, error) {
	var out []apiwire.Volume
	return out, c.do(ctx, http.MethodGet, "/v1/volumes", authTeam, nil, &out)
}

// DeleteVolume deletes a volume (name or ID) and its files.
func (c *Client) DeleteVolume(ctx context.Context, name string) error {
	return c.do(ctx, http.MethodDelete, "/v1/volumes/"+url.PathEscape(name), authTeam, nil, nil)
}

// TemplateNames maps template IDs to names, for showing sandboxes.
func TemplateNames(ts []apiwire.Template) map[string]string {
	m := make(map[string]string, len(ts))
	for _, t := range ts {
		m[t.ID] = t.Name
	}
	return m
}

// SortSandboxes orders sandboxes newest first (ties by ID), for stable
// listings.
func SortSandboxes(sbs []apiwire.Sandbox) {
	sort.SliceStable(sbs, func(i, j int) bool {
		if !sbs[i].CreatedAt.Equal(sbs[j].CreatedAt) {
			return sbs[i].CreatedAt.After(sbs[j].CreatedAt)
		}
		return sbs[i].ID < sbs[j].ID
	})
}

// ---- plumbing ----

type authMode int

const (
	authNone authMode = iota
	authUser          // Bearer session token only
	authTeam          // X-API-Key, else Bearer
)

// ErrNoCredentials says the call needs credentials the client lacks.
var ErrNoCredentials = errors.New("no credentials")

func sandboxPath(id, suffix string) string {
	return "/v1/sandboxes/" + url.PathEscape(id) + suffix
}

func filesPath(id, path string) string {
	return sandboxPath(id, "/files") + "?" + url.Values{"path": {path}}.Encode()
}

func (c *Client) do(ctx context.Context, method, path string, mode authMode, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("encode request: %w", err)
		}
		body = bytes.NewReader(b)
	}
	req, err := c.newRequest(ctx, method, path, mode, body)
	if err != nil {
		return err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	return c.roundTrip(req, out)
}

func (c *Client) newRequest(ctx context.Context, method, path string, mode authMode, body io.Reader) (*http.Request, error) {
	if c.BaseURL == "" {
		return nil, &UsageError{Msg: "no hearth URL configured", Hint: "run `hearth login --url URL`, or set HEARTH_URL"}
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimRight(c.BaseURL, "/")+path, body)
	if err != nil {
		return nil, fmt.Errorf("build request: %w", err)
	}
	ua := c.UserAgent
	if ua == "" {
		ua = "hearth-cli"
	}
	req.Header.Set("User-Agent", ua)
	req.Header.Set("Accept", "application/json")
	switch mode {
	case authTeam:
		switch {
		case c.APIKey != "":
			req.Header.Set("X-API-Key", c.APIKey)
		case c.Token != "":
			req.Header.Set("Authorization", "Bearer "+c.Token)
		default:
			return nil, &UsageError{Msg: "not logged in", Hint: "run `hearth login --url URL`, or set HEARTH_API_KEY", Err: ErrNoCredentials}
		}
	case authUser:
		if c.Token == "" {
			return nil, &UsageError{Msg: "this command needs a login session, not an API key", Hint: "run `hearth login --url URL` with your email and password", Err: ErrNoCredentials}
		}
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	return req, nil
}

func (c *Client) send(req *http.Request) (*http.Response, error) {
	hc := c.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		if ctxErr := req.Context().Err(); ctxErr != nil {
			return nil, ctxErr
		}
		return nil, &ConnError{URL: c.BaseURL, Err: err}
	}
	return resp, nil
}

func (c *Client) roundTrip(req *http.Request, out any) error {
	resp, err := c.send(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return decodeError(req, resp)
	}
	if out == nil || resp.StatusCode == http.StatusNoContent {
		_, _ = io.Copy(io.Discard, resp.Body) // lets the connection be reused
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("%s %s: decode response: %w", req.Method, req.URL.Path, err)
	}
	return nil
}

// decodeError turns a non-2xx response into an *APIError, whatever the
// body (a proxy in front may answer HTML).
func decodeError(req *http.Request, resp *http.Response) error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	e := &APIError{Status: resp.StatusCode, Method: req.Method, Path: req.URL.Path}
	var body apiwire.Error
	if json.Unmarshal(b, &body) == nil && body.Message != "" {
		e.Message = body.Message
	} else {
		e.Message = strings.TrimSpace(string(b))
		if len(e.Message) > 200 || e.Message == "" || strings.HasPrefix(e.Message, "<") || strings.Contains(e.Message, "\n") {
			e.Message = http.StatusText(resp.StatusCode)
		}
	}
	return e
}

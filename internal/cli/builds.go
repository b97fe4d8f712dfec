package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/hearth-sandbox/hearth/internal/apiwire"
)

// Build wire types: internal/apiwire.
type (
	Build        = apiwire.Build
	BuildLog     = apiwire.BuildLog
	BuildRequest = apiwire.BuildRequest
)

func buildsPath(name string, suffix string) string {
	return "/v1/templates/" + url.PathEscape(name) + "/builds" + suffix
}

// UploadBuildContext uploads a gzipped tar and returns its hash.
func (c *Client) UploadBuildContext(ctx context.Context, r io.Reader) (string, error) {
	req, err := c.newRequest(ctx, http.MethodPut, "/v1/build-contexts", authTeam, r)
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", "application/gzip")
	var out struct {
		Hash string `json:"hash"`
	}
	return out.Hash, c.roundTrip(req, &out)
}

// CreateBuild starts a build of template name.
func (c *Client) CreateBuild(ctx context.Context, name string, in BuildRequest) (Build, error) {
	var out Build
	return out, c.do(ctx, http.MethodPost, buildsPath(name, ""), authTeam, in, &out)
}

// GetBuild returns a build's status.
func (c *Client) GetBuild(ctx context.Context, name, id string) (Build, error) {
	var out Build
	return out, c.do(ctx, http.MethodGet, buildsPath(name, "/"+url.PathEscape(id)), authTeam, nil, &out)
}

// ListBuilds returns a template's builds, newest first.
func (c *Client) ListBuilds(ctx context.Context, name string) ([]Build, error) {
	var out []Build
	return out, c.do(ctx, http.MethodGet, buildsPath(name, ""), authTeam, nil, &out)
}

// CancelBuild cancels a running build.
func (c *Client) CancelBuild(ctx context.Context, name, id string) (Build, error) {
	var out Build
	return out, c.do(ctx, http.MethodPost, buildsPath(name, "/"+url.PathEscape(id)+"/cancel"), authTeam, nil, &out)
}

// DeleteTemplate deletes a built template.
func (c *Client) DeleteTemplate(ctx context.Context, name string) error {
	return c.do(ctx, http.MethodDelete, "/v1/templates/"+url.PathEscape(name), authTeam, nil, nil)
}

// FollowBuildLogs streams a build's log lines after seq `after` to fn
// until the build ends (the server closes the stream).
func (c *Client) FollowBuildLogs(ctx context.Context, name, id string, after int, fn func(BuildLog) error) error {
	req, err := c.newRequest(ctx, http.MethodGet, buildsPath(name, "/"+url.PathEscape(id)+"/logs")+"?follow=true&after="+strconv.Itoa(after), authTeam, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", ndjson)
	resp, err := c.send(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return decodeError(req, resp)
	}
	dec := json.NewDecoder(resp.Body)
	for {
		var l BuildLog
		if err := dec.Decode(&l); err != nil {
			if err == io.EOF {
				return nil
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("build log stream: %w", err)
		}
		if err := fn(l); err != nil {
			return err
		}
	}
}

// BuildProgress shows a build's steps as they go: each step cached,
// running or done with its elapsed time, and the running step's last
// lines. On a terminal it redraws in place; otherwise it prints the plain
// log.
type BuildProgress struct {
	w       io.Writer
	live    bool
	steps   []*stepView
	drawn   int // lines drawn last time (live mode)
	general []string
}

type stepView struct {
	n       int
	text    string
	state   string // running, cached, done, failed
	started time.Time
	took    time.Duration
	last    []string
}

// NewBuildProgress draws on w; live redraws in place (a terminal).
func NewBuildProgress(w io.Writer, live bool) *BuildProgress {
	return &BuildProgress{w: w, live: live}
}

const (
	progressTail  = 4
	progressWidth = 100
)

// Add takes one log line.
func (p *BuildProgress) Add(l BuildLog) {
	if !p.live {
		step := ""
		if l.Step > 0 {
			step = fmt.Sprintf("[%d] ", l.Step)
		}
		fmt.Fprintf(p.w, "%s %s%s\n", l.Time.Local().Format("15:04:05"), step, l.Message)
		return
	}
	if l.Step == 0 {
		p.general = append(p.general, l.Message)
		if len(p.general) > 2 {
			p.general = p.general[1:]
		}
	} else {
		s := p.step(l)
		switch {
		case strings.HasPrefix(l.Message, "CACHED "):
			s.state, s.text = "cached", strings.TrimPrefix(l.Message, "CACHED ")
		case strings.HasPrefix(l.Message, "done in "):
			s.state, s.took = "done", time.Since(s.started)
		case l.Level == "error":
			s.state, s.took = "failed", time.Since(s.started)
			s.tail(l.Message)
		case s.text == "":
			s.text = l.Message
		default:
			s.tail(l.Message)
		}
	}
	p.draw()
}

func (s *stepView) tail(m string) {
	s.last = append(s.last, m)
	if len(s.last) > progressTail {
		s.last = s.last[1:]
	}
}

func (p *BuildProgress) step(l BuildLog) *stepView {
	for _, s := range p.steps {
		if s.n == l.Step {
			return s
		}
	}
	s := &stepView{n: l.Step, state: "running", started: time.Now()}
	p.steps = append(p.steps, s)
	return s
}

// Tick redraws (elapsed times move while a step runs).
func (p *BuildProgress) Tick() {
	if p.live {
		p.draw()
	}
}

func (p *BuildProgress) draw() {
	var b strings.Builder
	if p.drawn > 0 {
		fmt.Fprintf(&b, "\033[%dA\033[J", p.drawn)
	}
	lines := 0
	line := func(format string, a ...any) {
		// One screen line each, or the redraw would miscount.
		l := []rune(fmt.Sprintf(format, a...))
		if len(l) > progressWidth {
			l = append(l[:progressWidth-1], '…')
		}
		b.WriteString(string(l) + "\n")
		lines++
	}
	for _, s := range p.steps {
		switch s.state {
		case "cached":
			line("  ✓ [%d] %s (cached)", s.n, s.text)
		case "done":
			line("  ✓ [%d] %s (%.1fs)", s.n, s.text, s.took.Seconds())
		case "failed":
			line("  ✗ [%d] %s (%.1fs)", s.n, s.text, s.took.Seconds())
		default:
			line("  ▸ [%d] %s (%.1fs)", s.n, s.text, time.Since(s.started).Seconds())
		}
		if s.state == "running" || s.state == "failed" {
			for _, l := range s.last {
				line("      %s", l)
			}
		}
	}
	for _, g := range p.general {
		line("  %s", g)
	}
	p.drawn = lines
	_, _ = io.WriteString(p.w, b.String())
}

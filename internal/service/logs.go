package service

import (
	"bytes"
	"context"
	"strings"
)

// maxLogRead is how much of a console log one request reads from its host.
const maxLogRead = 1 << 20

// SandboxLogLines returns a sandbox's guest console log (kernel boot, init
// and envd output) as lines, from line index from, at most limit of them.
// The log is read from the sandbox's host through its agent, never from a
// file here; a host that cannot read logs answers Unimplemented.
func (s *Service) SandboxLogLines(ctx context.Context, p Principal, id string, from, limit int) ([]string, error) {
	sb, err := s.GetSandbox(ctx, p, id)
	if err != nil {
		return nil, err
	}
	if from < 0 || limit < 0 {
		return nil, InvalidArgument("start", "must not be negative")
	}
	hc, err := s.hosts.Get(ctx, sb.Host)
	if err != nil {
		return nil, err
	}
	lr, ok := hc.(ConsoleLogReader)
	if !ok {
		return nil, Unimplemented("this sandbox's host cannot read console logs", nil)
	}
	// The newest maxLogRead bytes: a log longer than that loses its
	// oldest lines (the boot), which a caller paging from 0 sees as the
	// first line.
	_, size, err := lr.ReadConsoleLog(ctx, sb.ID, 0, 1)
	if err != nil {
		return nil, hostErrFor("read the console log", err)
	}
	off := max(0, size-maxLogRead)
	data, _, err := lr.ReadConsoleLog(ctx, sb.ID, off, maxLogRead)
	if err != nil {
		return nil, hostErrFor("read the console log", err)
	}
	if off > 0 {
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			data = data[i+1:] // drop the partial first line
		}
	}
	text := strings.TrimRight(strings.ReplaceAll(string(data), "\r", ""), "\n")
	if text == "" {
		return []string{}, nil
	}
	lines := strings.Split(text, "\n")
	if from >= len(lines) {
		return []string{}, nil
	}
	lines = lines[from:]
	if limit > 0 && len(lines) > limit {
		lines = lines[:limit]
	}
	return lines, nil
}

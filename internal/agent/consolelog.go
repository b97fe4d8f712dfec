package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/hearth-sandbox/hearth/internal/vmm"
)

// MaxConsoleRead bounds one ReadConsoleLog answer.
const MaxConsoleRead = 1 << 20

// ReadConsoleLog returns up to maxBytes of a sandbox's guest console log
// from offset, and the log's size. The log survives pause and resume (the
// VMM appends to it), so it holds the boot and everything after.
func (m *Manager) ReadConsoleLog(_ context.Context, sandboxID string, offset int64, maxBytes int) ([]byte, int64, error) {
	sb, err := m.get(sandboxID)
	if err != nil {
		return nil, 0, err
	}
	if offset < 0 {
		return nil, 0, &FieldError{Field: "offset", Msg: "must not be negative"}
	}
	if maxBytes <= 0 || maxBytes > MaxConsoleRead {
		maxBytes = MaxConsoleRead
	}
	f, err := os.Open(vmm.ConsoleLog(filepath.Join(sb.runDir, "vm")))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, 0, nil // not booted yet
	}
	if err != nil {
		return nil, 0, fmt.Errorf("console log: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, 0, fmt.Errorf("console log: %w", err)
	}
	if offset >= st.Size() {
		return nil, st.Size(), nil
	}
	buf := make([]byte, min(int64(maxBytes), st.Size()-offset))
	n, err := f.ReadAt(buf, offset)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, 0, fmt.Errorf("console log: %w", err)
	}
	return buf[:n], st.Size(), nil
}

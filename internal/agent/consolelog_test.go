package agent

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestReadConsoleLog(t *testing.T) {
	t.Parallel()
	h := newHarness(t, false)
	ctx := context.Background()
	if _, err := h.m.Create(ctx, spec("abc123")); err != nil {
		t.Fatal(err)
	}
	// Not booted far enough to have a log: empty, not an error.
	if data, size, err := h.m.ReadConsoleLog(ctx, "abc123", 0, 0); err != nil || len(data) != 0 || size != 0 {
		t.Fatalf("no log: %q %d %v", data, size, err)
	}
	log := "Linux version 6.1\ninit: started\nenvd: listening\n"
	if err := os.WriteFile(filepath.Join(h.data, "sandboxes", "abc123", "vm", "console.log"), []byte(log), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name     string
		offset   int64
		max      int
		want     string
		wantSize int64
	}{
		{"all", 0, 0, log, int64(len(log))},
		{"bounded", 0, 5, "Linux", int64(len(log))},
		{"from offset", 18, 5, "init:", int64(len(log))},
		{"past the end", 1000, 10, "", int64(len(log))},
	} {
		data, size, err := h.m.ReadConsoleLog(ctx, "abc123", tc.offset, tc.max)
		if err != nil || string(data) != tc.want || size != tc.wantSize {
			t.Errorf("%s: %q %d %v, want %q %d", tc.name, data, size, err, tc.want, tc.wantSize)
		}
	}
	if _, _, err := h.m.ReadConsoleLog(ctx, "abc123", -1, 10); !errors.Is(err, ErrInvalid) {
		t.Errorf("negative offset: %v", err)
	}
	if _, _, err := h.m.ReadConsoleLog(ctx, "nosuch", 0, 10); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown sandbox: %v", err)
	}
}

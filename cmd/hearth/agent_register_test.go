package main

import (
	"os"
	"path/filepath"
	"testing"
)

func TestRegisterToken(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "node-1")
	if err := os.WriteFile(file, []byte("hrt_abc\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	unreadable := filepath.Join(dir, "sub")
	if err := os.Mkdir(unreadable, 0o700); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, flag, file, want string
		wantErr                bool
	}{
		{"flag wins", "hrt_flag", file, "hrt_flag", false},
		{"from the file, trimmed", "", file, "hrt_abc", false},
		{"missing file: already joined", "", filepath.Join(dir, "node-2"), "", false},
		{"neither", "", "", "", false},
		{"a directory is an error", "", unreadable, "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := registerToken(tt.flag, tt.file)
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Fatalf("registerToken(%q, %q) = %q, %v; want %q, error %v", tt.flag, tt.file, got, err, tt.want, tt.wantErr)
			}
		})
	}
}

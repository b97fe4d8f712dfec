package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestConfigSaveLoad(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "nested", "hearth", "cli.json")
	if c, err := LoadConfig(path); err != nil || c != (Config{}) {
		t.Fatalf("missing file: %+v, %v", c, err)
	}
	want := Config{URL: "http://h:3000", Token: "tok", APIKey: "e2b_k", Email: "a@b.c"}
	if err := SaveConfig(path, want); err != nil {
		t.Fatal(err)
	}
	for p, mode := range map[string]os.FileMode{path: 0o600, filepath.Dir(path): 0o700} {
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != mode {
			t.Errorf("%s mode %v, want %v", p, st.Mode().Perm(), mode)
		}
	}
	got, err := LoadConfig(path)
	if err != nil || got != want {
		t.Fatalf("load = %+v, %v", got, err)
	}
	// Overwrite keeps 0600 and leaves no temp files.
	if err := SaveConfig(path, Config{URL: "x"}); err != nil {
		t.Fatal(err)
	}
	ents, _ := os.ReadDir(filepath.Dir(path))
	if len(ents) != 1 {
		t.Errorf("dir holds %v", ents)
	}
	if err := os.WriteFile(path, []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadConfig(path); err == nil || !strings.Contains(err.Error(), "hearth login") {
		t.Errorf("corrupt file: %v", err)
	}
}

func TestResolve(t *testing.T) {
	t.Parallel()
	file := Config{URL: "http://file", Token: "ftok", APIKey: "fkey"}
	for _, tc := range []struct {
		name string
		env  map[string]string
		o    Overrides
		want Config
	}{
		{"file only", nil, Overrides{}, file},
		{"env url and key", map[string]string{EnvURL: "http://env/", EnvAPIKey: "ekey"}, Overrides{}, Config{URL: "http://env", Token: "ftok", APIKey: "ekey"}},
		{"flags beat env", map[string]string{EnvURL: "http://env", EnvAPIKey: "ekey"}, Overrides{URL: "http://flag", APIKey: "fl"}, Config{URL: "http://flag", Token: "ftok", APIKey: "fl"}},
		{"env token replaces file key", map[string]string{EnvToken: "etok"}, Overrides{}, Config{URL: "http://file", Token: "etok"}},
		{"empty env ignored", map[string]string{EnvURL: "", EnvAPIKey: ""}, Overrides{}, file},
	} {
		got := Resolve(file, func(k string) string { return tc.env[k] }, tc.o)
		if got != tc.want {
			t.Errorf("%s: got %+v, want %+v", tc.name, got, tc.want)
		}
	}
}

func TestDefaultConfigPath(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{EnvConfig: "/x/c.json", "HOME": "/h"}, "/x/c.json"},
		{map[string]string{"XDG_CONFIG_HOME": "/xdg", "HOME": "/h"}, "/xdg/hearth/cli.json"},
		{map[string]string{"HOME": "/h"}, "/h/.config/hearth/cli.json"},
	} {
		got, err := DefaultConfigPath(func(k string) string { return tc.env[k] })
		if err != nil || got != tc.want {
			t.Errorf("%v: %q, %v", tc.env, got, err)
		}
	}
}

func TestFormatting(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, tc := range []struct{ got, want string }{
		{Age(now, time.Time{}), "-"},
		{Age(now, now.Add(time.Second)), "0s"},
		{Age(now, now.Add(-59*time.Second)), "59s"},
		{Age(now, now.Add(-90*time.Minute)), "1h"},
		{Age(now, now.Add(-47*time.Hour)), "47h"},
		{Age(now, now.Add(-72*time.Hour)), "3d"},
		{Bytes(0), "0 B"},
		{Bytes(1023), "1023 B"},
		{Bytes(1536), "1.5 KiB"},
		{Bytes(20480 << 20), "20.0 GiB"},
		{Resources(2, 512, 20480), "2 vCPU, 512.0 MiB, 20.0 GiB disk"},
		{Pairs(nil), "-"},
		{Pairs(map[string]string{"b": "2", "a": "1"}), "a=1,b=2"},
	} {
		if tc.got != tc.want {
			t.Errorf("got %q, want %q", tc.got, tc.want)
		}
	}
}

func TestParsePairs(t *testing.T) {
	t.Parallel()
	m, err := ParsePairs("env", []string{"A=1", "B=x=y", "C="})
	if err != nil || len(m) != 3 || m["A"] != "1" || m["B"] != "x=y" || m["C"] != "" {
		t.Fatalf("%v, %v", m, err)
	}
	if m, err := ParsePairs("env", nil); err != nil || m != nil {
		t.Errorf("nil: %v, %v", m, err)
	}
	for _, bad := range []string{"A", "=1"} {
		_, err := ParsePairs("metadata", []string{bad})
		var ue *UsageError
		if !asUsage(err, &ue) || !strings.Contains(ue.Hint, "--metadata KEY=VALUE") {
			t.Errorf("%q: %v", bad, err)
		}
	}
}

func asUsage(err error, ue **UsageError) bool {
	u, ok := err.(*UsageError)
	*ue = u
	return ok
}

func TestTable(t *testing.T) {
	t.Parallel()
	var b strings.Builder
	tb := NewTable(&b, "id", "name")
	tb.Row("1", "with\ttab")
	tb.Row("22", "x\ny")
	if err := tb.Flush(); err != nil {
		t.Fatal(err)
	}
	want := "ID  NAME\n1   with tab\n22  x y\n"
	if b.String() != want {
		t.Errorf("table:\n%q\nwant\n%q", b.String(), want)
	}
}

func TestBar(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		total, n int64
		want     string
	}{
		{100, 0, "up [>                             ]   0%  0 B / 100 B"},
		{100, 50, "up [===============>              ]  50%  50 B / 100 B"},
		{100, 100, "up [==============================] 100%  100 B / 100 B"},
		{100, 150, "up [==============================] 100%  150 B / 100 B"},
		{-1, 2048, "up  2.0 KiB"},
	} {
		b := NewBar(nil, "up", tc.total, false)
		b.Add(int(tc.n))
		if got := b.render(0); got != tc.want {
			t.Errorf("total %d n %d:\n got %q\nwant %q", tc.total, tc.n, got, tc.want)
		}
	}
	// Counting through the wrappers, and drawing only when animated.
	var out strings.Builder
	b := NewBar(&out, "x", 10, false)
	var sink strings.Builder
	if _, err := b.Writer(&sink).Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 3)
	if n, _ := b.Reader(strings.NewReader("abc")).Read(buf); n != 3 {
		t.Fatal(n)
	}
	b.Finish()
	if b.N() != 8 || out.Len() != 0 || sink.String() != "hello" {
		t.Errorf("n=%d out=%q sink=%q", b.N(), out.String(), sink.String())
	}
	anim := NewBar(&out, "x", 10, true)
	anim.Add(10)
	anim.Finish()
	if !strings.Contains(out.String(), "] 100%  10 B / 10 B") || !strings.HasSuffix(out.String(), "\n") || !strings.HasPrefix(out.String(), "\r") {
		t.Errorf("animated output %q", out.String())
	}
}

func TestSpinner(t *testing.T) {
	t.Parallel()
	var out strings.Builder
	s := StartSpinner(&out, "working", false)
	s.Stop("done")
	s.Stop("again") // idempotent
	if !strings.HasPrefix(out.String(), "done (") || strings.Count(out.String(), "\n") != 1 {
		t.Errorf("spinner output %q", out.String())
	}
}

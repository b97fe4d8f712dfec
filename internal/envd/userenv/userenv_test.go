package userenv

import (
	"encoding/base64"
	"net/http"
	"testing"
)

func TestUserName(t *testing.T) {
	t.Parallel()
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	cases := []struct {
		header  string
		want    string
		wantErr bool
	}{
		{"", "", false},
		{"Basic " + b64("user:"), "user", false},
		{"basic " + b64("root:ignored"), "root", false},
		{"Bearer abc", "", true},
		{"Basic !!!", "", true},
	}
	for _, tc := range cases {
		h := http.Header{}
		if tc.header != "" {
			h.Set("Authorization", tc.header)
		}
		got, err := UserName(h)
		if got != tc.want || (err != nil) != tc.wantErr {
			t.Errorf("UserName(%q) = %q, %v; want %q, err %v", tc.header, got, err, tc.want, tc.wantErr)
		}
	}
}

func TestExpandPathAndDefaults(t *testing.T) {
	t.Parallel()
	u := User{Name: "u", Home: "/home/u"}
	var s State
	if s.DefaultUser() != FallbackUser {
		t.Fatalf("default user = %q", s.DefaultUser())
	}
	cases := map[string]string{
		"":            "/home/u",
		"~":           "/home/u",
		"~/a/../b":    "/home/u/b",
		"rel/x":       "/home/u/rel/x",
		"/abs//y/":    "/abs/y",
		"~other/file": "/home/u/~other/file",
	}
	for in, want := range cases {
		if got := s.ExpandPath(in, u); got != want {
			t.Errorf("ExpandPath(%q) = %q, want %q", in, got, want)
		}
	}
	s.SetDefaults("nobody", "/work")
	s.SetDefaults("", "") // empty values keep what is set
	if s.DefaultUser() != "nobody" || s.ExpandPath("", u) != "/work" || s.Workdir(u) != "/work" {
		t.Fatalf("defaults = %q %q", s.DefaultUser(), s.DefaultWorkdir())
	}
	s.MergeEnv(map[string]string{"A": "1"})
	s.MergeEnv(map[string]string{"A": "2", "B": "3"})
	if env := s.Env(); env["A"] != "2" || env["B"] != "3" {
		t.Fatalf("env = %v", env)
	}
}

func TestLookup(t *testing.T) {
	t.Parallel()
	root, err := Lookup("root")
	if err != nil || root.UID != 0 || root.Home == "" {
		t.Fatalf("root = %+v, %v", root, err)
	}
	byID, err := Lookup("0")
	if err != nil || byID.Name != "root" {
		t.Fatalf("uid 0 = %+v, %v", byID, err)
	}
	if _, err := Lookup("no-such-user-xyz"); err == nil {
		t.Fatal("unknown user resolved")
	}
}

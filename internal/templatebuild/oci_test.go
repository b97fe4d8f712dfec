package templatebuild

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/hearth-sandbox/hearth/internal/templatebuild/ocitest"
)

// TestPrivateRegistry pulls from a registry behind HTTP basic auth: the
// right credentials build, wrong or missing ones are an *AccessError
// naming the registry, and CheckAccess tells the same before a build.
func TestPrivateRegistry(t *testing.T) {
	const user, pass = "ada", "s3cret-pa55"
	reg := ocitest.PrivateRegistry(t, user, pass)
	ref := reg + "/team/private:1"
	ocitest.PushPrivate(t, ref, user, pass, v1.Config{Env: []string{"PATH=/bin"}},
		ocitest.Layer(t, ocitest.Entry{Name: "etc", Dir: true}, ocitest.Entry{Name: "etc/motd", Body: "private\n"}))
	ctx := context.Background()

	tests := []struct {
		name     string
		auth     RegistryAuth
		ok       bool
		withAuth bool
	}{
		{"right credentials", RegistryAuth{Username: user, Password: pass}, true, true},
		{"wrong password", RegistryAuth{Username: user, Password: "nope"}, false, true},
		{"no credentials", RegistryAuth{}, false, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := CheckAccess(ctx, ref, tc.auth)
			var ae *AccessError
			if tc.ok {
				if err != nil {
					t.Fatalf("CheckAccess: %v", err)
				}
			} else if !errors.As(err, &ae) || ae.Registry != reg || ae.Status != 401 || ae.WithAuth != tc.withAuth {
				t.Fatalf("CheckAccess: %#v", err)
			}
			if err != nil && strings.Contains(err.Error(), pass) {
				t.Errorf("the error shows the password: %v", err)
			}
			_, err = resolveImage(ctx, ref, tc.auth)
			if tc.ok != (err == nil) {
				t.Fatalf("resolve: %v", err)
			}
			if !tc.ok && (!errors.As(err, &ae) || !strings.Contains(err.Error(), "registry "+reg+" refused")) {
				t.Errorf("resolve error does not name the registry: %v", err)
			}
		})
	}
	// An unreachable registry or an unknown tag is for the build host to
	// report: CheckAccess passes.
	if err := CheckAccess(ctx, reg+"/team/private:nope", RegistryAuth{Username: user, Password: pass}); err != nil {
		t.Errorf("unknown tag: %v", err)
	}
	if err := CheckAccess(ctx, "127.0.0.1:1/x:1", RegistryAuth{}); err != nil {
		t.Errorf("unreachable registry: %v", err)
	}

	// A COPY-less build from the private image, with the credentials.
	needRoot(t)
	b := newBuilder(t)
	out := filepath.Join(t.TempDir(), "rootfs.ext4")
	l := &logs{}
	if _, err := b.Build(ctx, Request{Plan: Plan{FromImage: ref, Steps: []Step{{Type: StepEnv, Args: []string{"A", "1"}}}}, Auth: RegistryAuth{Username: user, Password: pass}, Output: out, DiskSizeMB: 64, Log: l.add}); err != nil {
		t.Fatalf("build: %v\n%s", err, l)
	}
	if got := debugfsCat(t, out, "/etc/motd"); got != "private\n" {
		t.Errorf("/etc/motd = %q", got)
	}
	if strings.Contains(l.String(), pass) {
		t.Errorf("the build log shows the password:\n%s", l)
	}
}

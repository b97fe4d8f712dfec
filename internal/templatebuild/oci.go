package templatebuild

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// RegistryAuth are credentials for a private registry (empty: anonymous,
// or whatever the host's docker config holds).
type RegistryAuth struct {
	Username string
	Password string
}

// ImageError is a pull that failed: the image reference and what the
// registry answered.
type ImageError struct {
	Ref string
	Err error
}

func (e *ImageError) Error() string { return fmt.Sprintf("image %s: %v", e.Ref, e.Err) }
func (e *ImageError) Unwrap() error { return e.Err }

// image is a resolved OCI image.
type ociImage struct {
	ref    string
	digest string
	img    v1.Image
	config Config
	start  string // ENTRYPOINT + CMD as a shell command
}

// resolveImage fetches an image's manifest and config (not its layers).
// Registries on localhost or a loopback address are spoken to over plain
// HTTP (go-containerregistry's rule), others over HTTPS.
func resolveImage(ctx context.Context, ref string, auth RegistryAuth) (*ociImage, error) {
	r, err := name.ParseReference(ref)
	if err != nil {
		return nil, &ImageError{Ref: ref, Err: err}
	}
	img, err := remote.Image(r, remoteOptions(ctx, auth)...)
	if err != nil {
		return nil, &ImageError{Ref: ref, Err: accessError(r, ref, auth, err)}
	}
	dg, err := img.Digest()
	if err != nil {
		return nil, &ImageError{Ref: ref, Err: err}
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, &ImageError{Ref: ref, Err: fmt.Errorf("config: %w", err)}
	}
	o := &ociImage{ref: ref, digest: dg.String(), img: img, config: Config{Env: map[string]string{}}}
	for _, kv := range cf.Config.Env {
		k, v, _ := strings.Cut(kv, "=")
		o.config.Env[k] = v
	}
	o.config.Workdir = cf.Config.WorkingDir
	o.config.User = cf.Config.User
	var words []string
	for _, w := range append(append([]string(nil), cf.Config.Entrypoint...), cf.Config.Cmd...) {
		words = append(words, shellQuote(w))
	}
	o.start = strings.Join(words, " ")
	return o, nil
}

func remoteOptions(ctx context.Context, auth RegistryAuth) []remote.Option {
	opts := []remote.Option{
		remote.WithContext(ctx),
		remote.WithPlatform(v1.Platform{OS: "linux", Architecture: "amd64"}),
	}
	if auth.Username != "" || auth.Password != "" {
		return append(opts, remote.WithAuth(&authn.Basic{Username: auth.Username, Password: auth.Password}))
	}
	return append(opts, remote.WithAuthFromKeychain(authn.DefaultKeychain))
}

// AccessError is a registry refusing a pull: wrong or missing credentials.
type AccessError struct {
	Registry string
	Ref      string
	Status   int  // the registry's HTTP status (401, 403)
	WithAuth bool // credentials were given
}

func (e *AccessError) Error() string {
	if e.WithAuth {
		return fmt.Sprintf("registry %s refused the credentials given for %s (HTTP %d): check the username and password", e.Registry, e.Ref, e.Status)
	}
	return fmt.Sprintf("registry %s refused %s without credentials (HTTP %d): the image is private; give a username and password", e.Registry, e.Ref, e.Status)
}

// CheckAccess asks the registry for ref's manifest (a HEAD) with auth, so
// a build with wrong credentials is refused when it is asked for rather
// than on its host. It returns an *AccessError when the registry refuses
// (401, 403) and nil otherwise: a registry this process cannot reach or
// an unknown tag is for the build host to report, which may see another
// network.
func CheckAccess(ctx context.Context, ref string, auth RegistryAuth) error {
	r, err := name.ParseReference(ref)
	if err != nil {
		return nil
	}
	_, err = remote.Head(r, remoteOptions(ctx, auth)...)
	var ae *AccessError
	if errors.As(accessError(r, ref, auth, err), &ae) {
		return ae
	}
	return nil
}

// accessError turns a registry's 401/403 into an *AccessError; other
// errors are returned as they are.
func accessError(r name.Reference, ref string, auth RegistryAuth, err error) error {
	var te *transport.Error
	if errors.As(err, &te) && (te.StatusCode == http.StatusUnauthorized || te.StatusCode == http.StatusForbidden) {
		return &AccessError{Registry: r.Context().RegistryStr(), Ref: ref, Status: te.StatusCode, WithAuth: auth.Username != "" || auth.Password != ""}
	}
	return err
}

// unpack applies the image's layers in order into the directory tree,
// honouring whiteouts (.wh.NAME) and opaque directories (.wh..wh..opq).
func (o *ociImage) unpack(ctx context.Context, tree string, logf func(string, ...any)) error {
	layers, err := o.img.Layers()
	if err != nil {
		return &ImageError{Ref: o.ref, Err: err}
	}
	root, err := os.OpenRoot(tree)
	if err != nil {
		return err
	}
	defer root.Close()
	for i, l := range layers {
		if err := ctx.Err(); err != nil {
			return err
		}
		size, _ := l.Size()
		logf("layer %d/%d (%d KiB)", i+1, len(layers), size>>10)
		rc, err := l.Uncompressed()
		if err != nil {
			return &ImageError{Ref: o.ref, Err: fmt.Errorf("layer %d: %w", i+1, err)}
		}
		err = applyLayer(root, rc, logf)
		rc.Close()
		if err != nil {
			return &ImageError{Ref: o.ref, Err: fmt.Errorf("layer %d: %w", i+1, err)}
		}
	}
	return nil
}

// Unpack extracts a tar stream into the existing directory dir with the
// layer rules (owners and modes kept; nothing escapes dir).
func Unpack(dir string, r io.Reader) error {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer root.Close()
	return applyLayer(root, r, func(string, ...any) {})
}

const (
	whiteoutPrefix = ".wh."
	whiteoutOpaque = ".wh..wh..opq"
)

// applyLayer writes one layer's tar stream over root. Paths written by
// this layer are tracked so an opaque marker hides only what lower layers
// left in the directory, wherever the marker appears in the stream.
func applyLayer(root *os.Root, r io.Reader, logf func(string, ...any)) error {
	tr := tar.NewReader(r)
	written := map[string]bool{}
	type dirTime struct {
		name string
		t    time.Time
	}
	var dirTimes []dirTime
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		p, ok := cleanPath(h.Name)
		if !ok {
			return fmt.Errorf("unsafe path %q in layer", h.Name)
		}
		if p == "." {
			continue
		}
		dir, base := path.Split(p)
		dir = strings.TrimSuffix(dir, "/")
		if dir == "" {
			dir = "."
		}
		switch {
		case base == whiteoutOpaque:
			if err := removeLower(root, dir, written); err != nil {
				return err
			}
			continue
		case strings.HasPrefix(base, whiteoutPrefix):
			if err := root.RemoveAll(path.Join(dir, strings.TrimPrefix(base, whiteoutPrefix))); err != nil {
				return err
			}
			continue
		}
		written[p] = true
		mode := h.FileInfo().Mode()
		if dir != "." {
			// Archives may leave parent directories out (a build context
			// whose .dockerignore excludes the directory but brings one of
			// its files back).
			if err := root.MkdirAll(dir, 0o755); err != nil {
				return err
			}
		}
		if h.Typeflag != tar.TypeDir {
			if fi, err := root.Lstat(p); err == nil && (fi.IsDir() || h.Typeflag != tar.TypeLink) {
				if err := root.RemoveAll(p); err != nil {
					return err
				}
			}
		}
		switch h.Typeflag {
		case tar.TypeDir:
			if fi, err := root.Lstat(p); err == nil && !fi.IsDir() {
				if err := root.Remove(p); err != nil {
					return err
				}
			}
			if err := root.MkdirAll(p, 0o755); err != nil {
				return err
			}
			dirTimes = append(dirTimes, dirTime{p, h.ModTime})
		case tar.TypeReg:
			f, err := root.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
			if err != nil {
				return err
			}
			_, err = io.Copy(f, tr)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return err
			}
		case tar.TypeSymlink:
			if err := root.Symlink(h.Linkname, p); err != nil {
				return err
			}
		case tar.TypeLink:
			target, ok := cleanPath(h.Linkname)
			if !ok {
				return fmt.Errorf("unsafe hard link %q -> %q", h.Name, h.Linkname)
			}
			_ = root.Remove(p)
			if err := root.Link(target, p); err != nil {
				return err
			}
			continue // a link shares its target's inode: mode and owner are the target's
		default:
			// Device nodes and FIFOs: /dev is devtmpfs in the guest.
			logf("skipped %s (tar type %q)", p, h.Typeflag)
			continue
		}
		if err := root.Lchown(p, h.Uid, h.Gid); err != nil {
			return err
		}
		if h.Typeflag != tar.TypeSymlink {
			// After chown: chown clears setuid bits.
			if err := root.Chmod(p, mode&(fs.ModePerm|fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky)); err != nil {
				return err
			}
			if h.Typeflag == tar.TypeReg {
				_ = root.Chtimes(p, h.ModTime, h.ModTime)
			}
		}
	}
	for _, d := range dirTimes {
		_ = root.Chtimes(d.name, d.t, d.t)
	}
	return nil
}

// removeLower empties dir of everything this layer did not write, keeping
// (and descending into) directories it did.
func removeLower(root *os.Root, dir string, written map[string]bool) error {
	entries, err := fs.ReadDir(root.FS(), dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, e := range entries {
		p := path.Join(dir, e.Name())
		if !written[p] {
			if err := root.RemoveAll(p); err != nil {
				return err
			}
			continue
		}
		if e.IsDir() {
			if err := removeLower(root, p, written); err != nil {
				return err
			}
		}
	}
	return nil
}

// cleanPath makes a tar name relative to the root; false for names that
// climb out of it.
func cleanPath(n string) (string, bool) {
	p := path.Clean("/" + n)
	if strings.Contains(n, "..") {
		for _, el := range strings.Split(n, "/") {
			if el == ".." {
				return "", false
			}
		}
	}
	p = strings.TrimPrefix(p, "/")
	if p == "" {
		p = "."
	}
	return p, true
}

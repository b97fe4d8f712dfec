package agent

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"connectrpc.com/connect"
	"golang.org/x/sys/unix"

	pb "github.com/hearth-sandbox/hearth/gen/hostagent/v1"
	"github.com/hearth-sandbox/hearth/internal/hostwire"
)

// Copying a template between hosts (fleet mode: a sandbox placed on a host
// that lacks its template). The control plane pipes ExportTemplate of a
// holding host into ImportTemplate of the target. A template's files are
// DATA/images/<id>/ (a built template's disk) and DATA/templates/<id>/ (a
// snapshot template); both go, whichever exist. Data regions of sparse
// files are sent, holes are not (a snapshot template's disk is mostly
// hole). The last chunk carries the SHA-256 over every chunk before it;
// the target writes into a staging dir under DATA/templates/.staging-*
// (removed at start-up after a crash) and renames into place only once
// the hash matched.

// templateRoots are a template's directories under the data dir.
func templateRoots(id string) []string {
	return []string{filepath.Join("images", id), filepath.Join("templates", id)}
}

// hashChunk feeds everything of c but the final hash into h.
func hashChunk(h hash.Hash, c *pb.TemplateChunk) {
	var b [8]byte
	io.WriteString(h, c.TemplateId+"\x00"+c.Path+"\x00")
	for _, v := range []uint64{uint64(c.Offset), uint64(c.Size), uint64(c.Mode), boolBit(c.Dir)<<1 | boolBit(c.First), uint64(len(c.Data))} {
		binary.LittleEndian.PutUint64(b[:], v)
		h.Write(b[:])
	}
	h.Write(c.Data)
}

func boolBit(b bool) uint64 {
	if b {
		return 1
	}
	return 0
}

// exportTemplate sends template id's files under dataDir.
func exportTemplate(ctx context.Context, dataDir, id string, send func(*pb.TemplateChunk) error) error {
	if !validTemplate.MatchString(id) {
		return &FieldError{Field: "template_id", Msg: fmt.Sprintf("%q", id)}
	}
	h := sha256.New()
	emit := func(c *pb.TemplateChunk) error {
		c.TemplateId = id
		hashChunk(h, c)
		return send(c)
	}
	found := false
	for _, root := range templateRoots(id) {
		if !exists(filepath.Join(dataDir, root)) {
			continue
		}
		found = true
		err := filepath.WalkDir(filepath.Join(dataDir, root), func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if err := ctx.Err(); err != nil {
				return err
			}
			rel, err := filepath.Rel(dataDir, p)
			if err != nil {
				return err
			}
			info, err := d.Info()
			if err != nil {
				return err
			}
			switch {
			case d.IsDir():
				return emit(&pb.TemplateChunk{Path: rel, Dir: true, Mode: uint32(info.Mode().Perm())})
			case info.Mode().IsRegular():
				return exportFile(p, rel, info, emit)
			}
			return fmt.Errorf("%s: not a regular file or directory", rel)
		})
		if err != nil {
			return fmt.Errorf("export template %s: %w", id, err)
		}
	}
	if !found {
		return fmt.Errorf("template %s is not on this host: %w", id, ErrNotFound)
	}
	return send(&pb.TemplateChunk{TemplateId: id, Sha256: h.Sum(nil)})
}

// exportFile sends a file's data regions (SEEK_DATA/SEEK_HOLE) in chunks.
func exportFile(path, rel string, info fs.FileInfo, emit func(*pb.TemplateChunk) error) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	size := info.Size()
	if err := emit(&pb.TemplateChunk{Path: rel, First: true, Size: size, Mode: uint32(info.Mode().Perm())}); err != nil {
		return err
	}
	buf := make([]byte, hostwire.ChunkSize)
	for off := int64(0); off < size; {
		start, err := unix.Seek(int(f.Fd()), off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break // only a hole remains
		}
		if err != nil {
			return fmt.Errorf("seek data in %s: %w", rel, err)
		}
		end, err := unix.Seek(int(f.Fd()), start, unix.SEEK_HOLE)
		if err != nil {
			return fmt.Errorf("seek hole in %s: %w", rel, err)
		}
		for pos := start; pos < end; {
			n, err := f.ReadAt(buf[:min(int64(len(buf)), end-pos)], pos)
			if n > 0 {
				if err := emit(&pb.TemplateChunk{Path: rel, Offset: pos, Data: bytes.Clone(buf[:n])}); err != nil {
					return err
				}
				pos += int64(n)
			}
			if err != nil && !(errors.Is(err, io.EOF) && pos >= end) {
				return fmt.Errorf("read %s: %w", rel, err)
			}
		}
		off = end
	}
	return nil
}

// importTemplate receives an exportTemplate stream into dataDir. It
// returns the template ID and the data bytes written.
func importTemplate(ctx context.Context, dataDir string, recv func() (*pb.TemplateChunk, error)) (id string, n int64, err error) {
	tdir := filepath.Join(dataDir, "templates")
	if err := os.MkdirAll(tdir, 0o700); err != nil {
		return "", 0, err
	}
	if err := os.MkdirAll(filepath.Join(dataDir, "images"), 0o755); err != nil {
		return "", 0, err
	}
	staging, err := os.MkdirTemp(tdir, ".staging-import-")
	if err != nil {
		return "", 0, err
	}
	defer os.RemoveAll(staging)
	root, err := os.OpenRoot(staging)
	if err != nil {
		return "", 0, err
	}
	defer root.Close()
	files := map[string]*os.File{}
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	h := sha256.New()
	for {
		if err := ctx.Err(); err != nil {
			return id, n, err
		}
		c, err := recv()
		if err != nil {
			return id, n, fmt.Errorf("import template: %w", err)
		}
		if id == "" {
			if !validTemplate.MatchString(c.TemplateId) {
				return id, n, &FieldError{Field: "template_id", Msg: fmt.Sprintf("%q", c.TemplateId)}
			}
			id = c.TemplateId
		}
		if c.TemplateId != id {
			return id, n, &FieldError{Field: "template_id", Msg: fmt.Sprintf("%q within a stream of %s", c.TemplateId, id)}
		}
		if c.Sha256 != nil {
			if sum := h.Sum(nil); !bytes.Equal(sum, c.Sha256) {
				return id, n, fmt.Errorf("import template %s: SHA-256 %x, the sender's %x: %w", id, sum, c.Sha256, ErrInvalid)
			}
			break
		}
		hashChunk(h, c)
		if !inTemplate(c.Path, id) {
			return id, n, &FieldError{Field: "path", Msg: fmt.Sprintf("%q is not a file of template %s", c.Path, id)}
		}
		switch {
		case c.Dir:
			if err := root.MkdirAll(c.Path, fs.FileMode(c.Mode&0o777)|0o700); err != nil {
				return id, n, err
			}
		case c.First:
			if err := root.MkdirAll(filepath.Dir(c.Path), 0o700); err != nil {
				return id, n, err
			}
			f, err := root.OpenFile(c.Path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, fs.FileMode(c.Mode&0o777))
			if err != nil {
				return id, n, err
			}
			files[c.Path] = f
			if err := f.Truncate(c.Size); err != nil {
				return id, n, err
			}
		default:
			f, ok := files[c.Path]
			if !ok {
				return id, n, &FieldError{Field: "path", Msg: fmt.Sprintf("data for %q before its header", c.Path)}
			}
			if _, err := f.WriteAt(c.Data, c.Offset); err != nil {
				return id, n, err
			}
			n += int64(len(c.Data))
		}
	}
	for p, f := range files {
		if err := f.Sync(); err != nil {
			return id, n, fmt.Errorf("%s: %w", p, err)
		}
	}
	// Disk first: a built snapshot template's sandboxes need both, and a
	// template dir is what marks a snapshot template as present.
	for _, r := range templateRoots(id) {
		src, dst := filepath.Join(staging, r), filepath.Join(dataDir, r)
		if !exists(src) || exists(dst) {
			continue // not part of this template, or already here
		}
		// A concurrent import of the same template may have won the race:
		// its copy is as good as this one.
		if err := os.Rename(src, dst); err != nil && !exists(dst) {
			return id, n, fmt.Errorf("import template %s: %w", id, err)
		}
	}
	return id, n, nil
}

// inTemplate reports whether rel is one of template id's paths.
func inTemplate(rel, id string) bool {
	if !filepath.IsLocal(rel) || filepath.Clean(rel) != rel {
		return false
	}
	for _, r := range templateRoots(id) {
		if rel == r || strings.HasPrefix(rel, r+string(filepath.Separator)) {
			return true
		}
	}
	return false
}

// ExportTemplate streams template id's files (see exportTemplate).
func (m *Manager) ExportTemplate(ctx context.Context, id string, send func(*pb.TemplateChunk) error) error {
	return exportTemplate(ctx, m.d.DataDir, id, send)
}

// ImportTemplate receives a template from another host (see importTemplate).
func (m *Manager) ImportTemplate(ctx context.Context, recv func() (*pb.TemplateChunk, error)) (string, int64, error) {
	id, n, err := importTemplate(ctx, m.d.DataDir, recv)
	if err == nil {
		m.log.Info("template imported", "template", id, "bytes", n)
	}
	return id, n, err
}

func (s *rpcServer) ExportTemplate(ctx context.Context, req *connect.Request[pb.ExportTemplateRequest], st *connect.ServerStream[pb.TemplateChunk]) error {
	if err := s.m().ExportTemplate(ctx, req.Msg.TemplateId, st.Send); err != nil {
		return connectErr(err)
	}
	return nil
}

func (s *rpcServer) ImportTemplate(ctx context.Context, st *connect.ClientStream[pb.TemplateChunk]) (*connect.Response[pb.ImportTemplateResponse], error) {
	_, n, err := s.m().ImportTemplate(ctx, func() (*pb.TemplateChunk, error) {
		if !st.Receive() {
			if err := st.Err(); err != nil {
				return nil, err
			}
			return nil, io.ErrUnexpectedEOF // the stream ended before the hash
		}
		return st.Msg(), nil
	})
	if err != nil {
		return nil, connectErr(err)
	}
	return connect.NewResponse(&pb.ImportTemplateResponse{Bytes: n}), nil
}

package envd

import (
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"mime"
	"mime/multipart"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/hearth-sandbox/hearth/internal/envd/fssvc"
	"github.com/hearth-sandbox/hearth/internal/envd/userenv"
)

// uploadedEntry is an item of the POST /files response (envd.yaml EntryInfo).
type uploadedEntry struct {
	Path     string            `json:"path"`
	Name     string            `json:"name"`
	Type     string            `json:"type"`
	Metadata map[string]string `json:"metadata,omitempty"`
}

// metadata limits from the envd spec: key ≤ 246 bytes (xattr name limit
// minus the "user.e2b." prefix), all keys+values+prefixes ≤ 4096 bytes.
const (
	maxMetadataKey   = 246
	maxMetadataTotal = 4096
)

// fileUser picks the user for /files: ?username=, else the Authorization
// header, else the default user.
func (s *Server) fileUser(r *http.Request) (userenv.User, error) {
	name := r.URL.Query().Get("username")
	if name == "" {
		var err error
		if name, err = userenv.UserName(r.Header); err != nil {
			return userenv.User{}, err
		}
	}
	return s.state.Resolve(name)
}

func (s *Server) handleDownload(w http.ResponseWriter, r *http.Request) {
	u, err := s.fileUser(r)
	if err != nil {
		writeError(w, http.StatusUnauthorized, err.Error())
		return
	}
	raw := r.URL.Query().Get("path")
	if raw == "" {
		writeError(w, http.StatusBadRequest, "path is required")
		return
	}
	path := s.state.ExpandPath(raw, u)
	f, err := os.Open(path)
	if err != nil {
		writeFileError(w, path, err)
		return
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		writeFileError(w, path, err)
		return
	}
	if fi.IsDir() {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("path '%s' is a directory", path))
		return
	}
	if !fi.Mode().IsRegular() {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("path '%s' is not a regular file", path))
		return
	}
	h := w.Header()
	h.Set("Content-Disposition", mime.FormatMediaType("attachment", map[string]string{"filename": fi.Name()}))
	h.Set("Cache-Control", "no-store")
	if ct := mime.TypeByExtension(filepath.Ext(path)); ct != "" {
		h.Set("Content-Type", ct)
	} else {
		// Let ServeContent sniff; unknown binary becomes octet-stream.
		h.Del("Content-Type")
	}
	switch acceptEncoding(r.Header.Get("Accept-Encoding")) {
	case "gzip":
		if h.Get("Content-Type") == "" {
			h.Set("Content-Type", "application/octet-stream")
		}
		h.Set("Content-Encoding", "gzip")
		h.Add("Vary", "Accept-Encoding")
		w.WriteHeader(http.StatusOK)
		if r.Method == http.MethodHead {
			return
		}
		// BestSpeed: guests may run under TCG, where CPU is the scarce resource.
		gz, _ := gzip.NewWriterLevel(w, gzip.BestSpeed)
		if _, err := io.Copy(gz, f); err != nil {
			s.log.Warn("download failed", "path", path, "err", err)
			return
		}
		_ = gz.Close()
	case "identity":
		http.ServeContent(w, r, fi.Name(), fi.ModTime(), f)
	default:
		writeError(w, http.StatusNotAcceptable, "no acceptable encoding found, supported: [identity, gzip]")
	}
}

// acceptEncoding chooses gzip only when the client explicitly prefers it
// (the SDK's gzip option), identity otherwise; "" when neither is allowed.
func acceptEncoding(header string) string {
	if header == "" {
		return "identity"
	}
	identityOK, gzipOK, starOK := true, false, false
	for part := range strings.SplitSeq(header, ",") {
		coding, params, _ := strings.Cut(strings.TrimSpace(part), ";")
		coding = strings.ToLower(strings.TrimSpace(coding))
		zero := strings.ReplaceAll(strings.TrimSpace(params), " ", "")
		q0 := zero == "q=0" || zero == "q=0.0" || zero == "q=0.00" || zero == "q=0.000"
		switch coding {
		case "gzip":
			gzipOK = !q0
		case "identity":
			identityOK = !q0
		case "*":
			starOK = !q0
			if q0 && !strings.Contains(strings.ToLower(header), "identity") {
				identityOK = false
			}
		}
	}
	switch {
	case gzipOK:
		return "gzip"
	case identityOK:
		return "identity"
	case starOK:
		return "gzip"
	default:
		return ""
	}
}

func writeFileError(w http.ResponseWriter, path string, err error) {
	switch {
	case errors.Is(err, fs.ErrNotExist):
		writeError(w, http.StatusNotFound, fmt.Sprintf("path '%s' does not exist", path))
	case errors.Is(err, fs.ErrPermission):
		writeError(w, http.StatusForbidden, fmt.Sprintf("error opening '%s': permission denied", path))
	case errors.Is(err, syscall.ENOTDIR), errors.Is(err, syscall.EISDIR):
		writeError(w, http.StatusBadRequest, fmt.Sprintf("invalid path '%s': %v", path, err))
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT):
		writeError(w, http.StatusInsufficientStorage, "not enough disk space available")
	default:
		writeError(w, http.StatusInternalServerError, fmt.Sprintf("error accessing '%s': %v", path, err))
	}
}

// uploadMetadata collects X-Metadata-<key> headers (first value wins).
func uploadMetadata(h http.Header) (map[string]string, error) {
	md := map[string]string{}
	total := 0
	for name, vals := range h {
		key, ok := cutPrefixFold(name, "X-Metadata-")
		if !ok || len(vals) == 0 {
			continue
		}
		key = strings.ToLower(key)
		val := vals[0]
		if key == "" || len(key) > maxMetadataKey {
			return nil, fmt.Errorf("metadata key %q must be 1..%d bytes", key, maxMetadataKey)
		}
		if !printableASCII(key) || !printableASCII(val) {
			return nil, fmt.Errorf("metadata %q: keys and values must be printable US-ASCII", key)
		}
		md[key] = val
		total += len(fssvc.MetadataXattrPrefix) + len(key) + len(val)
	}
	if total > maxMetadataTotal {
		return nil, fmt.Errorf("metadata too large: %d bytes (limit %d)", total, maxMetadataTotal)
	}
	return md, nil
}

func cutPrefixFold(s, prefix string) (string, bool) {
	if len(s) < len(prefix) || !strings.EqualFold(s[:len(prefix)], prefix) {
		return "", false
	}
	return s[len(prefix):], true
}

func printableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

func (s *Server) handleUpload(w http.ResponseWriter, r *http.Request) {
	u, err := s.fileUser(r)
	if err != nil {
		writeError(w, http.StatusUnauthorized, err.Error())
		return
	}
	md, err := uploadMetadata(r.Header)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	queryPath := r.URL.Query().Get("path")
	ctype, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	var out []uploadedEntry
	if ctype == "multipart/form-data" {
		mr, err := r.MultipartReader()
		if err != nil {
			writeError(w, http.StatusBadRequest, "reading multipart body: "+err.Error())
			return
		}
		for {
			part, err := mr.NextPart()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				writeError(w, http.StatusBadRequest, "reading multipart body: "+err.Error())
				return
			}
			if part.FormName() != "file" {
				_ = part.Close()
				continue
			}
			dest := queryPath
			if dest == "" {
				dest = rawFilename(part)
			}
			if dest == "" {
				writeError(w, http.StatusBadRequest, "no destination: give ?path= or a filename in the part")
				return
			}
			entry, status, err := s.writeFile(s.state.ExpandPath(dest, u), u, part, md)
			_ = part.Close()
			if err != nil {
				writeError(w, status, err.Error())
				return
			}
			out = append(out, entry)
		}
		if len(out) == 0 {
			writeError(w, http.StatusBadRequest, `no "file" part in the multipart body`)
			return
		}
	} else {
		if queryPath == "" {
			writeError(w, http.StatusBadRequest, "path is required for a raw upload")
			return
		}
		var body io.Reader = r.Body
		switch enc := strings.ToLower(strings.TrimSpace(r.Header.Get("Content-Encoding"))); enc {
		case "", "identity":
		case "gzip":
			gz, err := gzip.NewReader(r.Body)
			if err != nil {
				writeError(w, http.StatusBadRequest, "gzip body: "+err.Error())
				return
			}
			defer gz.Close()
			body = gz
		default:
			writeError(w, http.StatusBadRequest, fmt.Sprintf("unsupported Content-Encoding %q", enc))
			return
		}
		entry, status, err := s.writeFile(s.state.ExpandPath(queryPath, u), u, body, md)
		if err != nil {
			writeError(w, status, err.Error())
			return
		}
		out = append(out, entry)
	}
	writeJSON(w, http.StatusOK, out)
}

// rawFilename returns the part's filename as sent. multipart.Part.FileName
// strips directories, but the E2B SDK sends the full destination path there.
func rawFilename(p *multipart.Part) string {
	_, params, err := mime.ParseMediaType(p.Header.Get("Content-Disposition"))
	if err != nil {
		return ""
	}
	return params["filename"]
}

// writeFile writes r to path (creating parents, truncating an existing
// file in place so watchers see a write) and gives it to u.
func (s *Server) writeFile(path string, u userenv.User, r io.Reader, md map[string]string) (uploadedEntry, int, error) {
	if fi, err := os.Stat(path); err == nil && fi.IsDir() {
		return uploadedEntry{}, http.StatusBadRequest, fmt.Errorf("path '%s' is a directory", path)
	}
	if err := fssvc.MkdirAllAs(filepath.Dir(path), u); err != nil {
		return uploadedEntry{}, statusFor(err), fmt.Errorf("creating parent of '%s': %w", path, err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return uploadedEntry{}, statusFor(err), fmt.Errorf("opening '%s': %w", path, err)
	}
	_, copyErr := io.Copy(f, r)
	closeErr := f.Close()
	if err := errors.Join(copyErr, closeErr); err != nil {
		return uploadedEntry{}, statusFor(err), fmt.Errorf("writing '%s': %w", path, err)
	}
	if err := fssvc.ChownTo(path, u); err != nil {
		return uploadedEntry{}, http.StatusInternalServerError, err
	}
	if err := fssvc.WriteMetadata(path, md); err != nil {
		return uploadedEntry{}, http.StatusInternalServerError, fmt.Errorf("storing metadata on '%s': %w", path, err)
	}
	e := uploadedEntry{Path: path, Name: filepath.Base(path), Type: "file"}
	if len(md) > 0 {
		e.Metadata = fssvc.ReadMetadata(path)
	}
	return e, http.StatusOK, nil
}

func statusFor(err error) int {
	switch {
	case errors.Is(err, fs.ErrPermission):
		return http.StatusForbidden
	case errors.Is(err, syscall.ENOTDIR), errors.Is(err, syscall.EISDIR), errors.Is(err, fs.ErrExist):
		return http.StatusBadRequest
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT):
		return http.StatusInsufficientStorage
	default:
		return http.StatusInternalServerError
	}
}

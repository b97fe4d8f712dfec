package hostreg

import (
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"time"
)

func signingString(method, path, date string, body []byte) []byte {
	sum := sha256.Sum256(body)
	return []byte(signContext + "\n" + method + "\n" + path + "\n" + date + "\n" + hex.EncodeToString(sum[:]))
}

// signRequest adds the signature headers to req, whose body is body.
func signRequest(req *http.Request, body []byte, cert *tls.Certificate, now time.Time) error {
	if cert == nil || len(cert.Certificate) == 0 {
		return errors.New("hostreg: no agent certificate")
	}
	signer, ok := cert.PrivateKey.(crypto.Signer)
	if !ok {
		return errors.New("hostreg: agent key cannot sign")
	}
	date := now.UTC().Format(time.RFC3339Nano)
	digest := sha256.Sum256(signingString(req.Method, req.URL.Path, date, body))
	sig, err := signer.Sign(rand.Reader, digest[:], crypto.SHA256)
	if err != nil {
		return fmt.Errorf("hostreg: sign request: %w", err)
	}
	req.Header.Set(HeaderCert, base64.StdEncoding.EncodeToString(cert.Certificate[0]))
	req.Header.Set(HeaderDate, date)
	req.Header.Set(HeaderSignature, base64.StdEncoding.EncodeToString(sig))
	return nil
}

// signedCert checks the signature headers of r (body already read) and
// returns the signing certificate (not yet verified against the CA) and
// the signed date.
func signedCert(r *http.Request, body []byte) (*x509.Certificate, time.Time, error) {
	der, err := base64.StdEncoding.DecodeString(r.Header.Get(HeaderCert))
	if err != nil || len(der) == 0 {
		return nil, time.Time{}, errors.New("missing or malformed " + HeaderCert)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("parse %s: %w", HeaderCert, err)
	}
	dateStr := r.Header.Get(HeaderDate)
	date, err := time.Parse(time.RFC3339Nano, dateStr)
	if err != nil {
		return nil, time.Time{}, errors.New("missing or malformed " + HeaderDate)
	}
	sig, err := base64.StdEncoding.DecodeString(r.Header.Get(HeaderSignature))
	if err != nil || len(sig) == 0 {
		return nil, time.Time{}, errors.New("missing or malformed " + HeaderSignature)
	}
	if err := cert.CheckSignature(x509.ECDSAWithSHA256, signingString(r.Method, r.URL.Path, dateStr, body), sig); err != nil {
		return nil, time.Time{}, fmt.Errorf("bad signature: %w", err)
	}
	return cert, date, nil
}

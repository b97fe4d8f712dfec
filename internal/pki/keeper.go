package pki

import (
	"context"
	"crypto/tls"
	"log/slog"
	"sync"
	"time"
)

// Keeper holds the certificate a process presents and replaces it before
// it expires. It is a CertSource for the tls.Config builders.
type Keeper struct {
	mu  sync.RWMutex
	cur *tls.Certificate
}

var _ CertSource = (*Keeper)(nil)

// NewKeeper starts with cert (Leaf must be set).
func NewKeeper(cert *tls.Certificate) *Keeper { return &Keeper{cur: cert} }

func (k *Keeper) Certificate() *tls.Certificate {
	k.mu.RLock()
	defer k.mu.RUnlock()
	return k.cur
}

// Set replaces the certificate for subsequent handshakes.
func (k *Keeper) Set(cert *tls.Certificate) {
	k.mu.Lock()
	k.cur = cert
	k.mu.Unlock()
}

// Renew obtains a fresh certificate (agent: CSR to the control plane;
// control plane: IssueControlPlane).
type Renew func(ctx context.Context) (*tls.Certificate, error)

// RotateOnce renews when the current certificate NeedsRotation at now.
// It reports whether it rotated; on error the old certificate stays.
func (k *Keeper) RotateOnce(ctx context.Context, now time.Time, renew Renew) (bool, error) {
	c := k.Certificate()
	if c != nil && c.Leaf != nil && !NeedsRotation(c.Leaf, now) {
		return false, nil
	}
	n, err := renew(ctx)
	if err != nil {
		return false, err
	}
	k.Set(n)
	return true, nil
}

// RotateLoop checks every interval (1h if zero) until ctx ends, renewing
// when due. Failures are logged and retried at the next check: with
// rotation at two thirds of the lifetime, a control plane that is away for
// less than a third of it costs nothing.
func (k *Keeper) RotateLoop(ctx context.Context, interval time.Duration, renew Renew, log *slog.Logger) {
	if interval <= 0 {
		interval = time.Hour
	}
	if log == nil {
		log = slog.Default()
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		rotated, err := k.RotateOnce(ctx, time.Now(), renew)
		switch {
		case err != nil:
			log.Warn("certificate rotation failed; will retry", "err", err)
		case rotated:
			log.Info("certificate rotated", "not_after", k.Certificate().Leaf.NotAfter)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Package ctxtime holds the one wait every retry loop needs: a sleep that
// ends early when its context does.
package ctxtime

import (
	"context"
	"time"
)

// Sleep waits d, or until ctx is done, and then returns ctx.Err(). A d of
// zero or less does not wait.
func Sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

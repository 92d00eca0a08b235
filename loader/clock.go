package loader

import (
	"context"
	"time"

	"github.com/fhirload/fhirload/internal/ctxtime"
)

// clock is time as the writer sees it; tests replace it to assert waits without sleeping.
type clock interface {
	Now() time.Time
	// Sleep waits d or until ctx is done (returning ctx.Err()).
	Sleep(ctx context.Context, d time.Duration) error
}

type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }

func (realClock) Sleep(ctx context.Context, d time.Duration) error { return ctxtime.Sleep(ctx, d) }

package wait_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/dpsd/dpsd/internal/wait"
)

func TestSleepEndsWithTheContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	// Were the context ignored, this would wait an hour and the test time out.
	if err := wait.Sleep(ctx, time.Hour); !errors.Is(err, context.Canceled) {
		t.Errorf("Sleep on an ended context = %v, want context.Canceled", err)
	}
	if err := wait.Sleep(context.Background(), time.Nanosecond); err != nil {
		t.Errorf("Sleep = %v", err)
	}
}

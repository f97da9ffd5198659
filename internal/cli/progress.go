package cli

import (
	"fmt"
	"io"
	"os"
	"strings"
	"time"
)

// progressBar draws one line of progress on a terminal, in place; on
// anything else (a file, a pipe, CI logs) it draws nothing.
type progressBar struct {
	w     io.Writer
	label string
	total int64
	start time.Time
	last  time.Time
}

func newProgressBar(w io.Writer, label string) *progressBar {
	if !isTerminal(w) {
		return nil
	}
	return &progressBar{w: w, label: label, start: time.Now()}
}

// isTerminal reports whether w is a terminal (a character device).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// setTotal sets the number of records expected (0: unknown).
func (p *progressBar) setTotal(n int64) {
	if p != nil {
		p.total = n
	}
}

// update redraws the line, at most ten times a second.
func (p *progressBar) update(done int64) {
	if p == nil {
		return
	}
	now := time.Now()
	if now.Sub(p.last) < 100*time.Millisecond {
		return
	}
	p.last = now
	p.draw(done, now)
}

// finish draws the final state and ends the line.
func (p *progressBar) finish(done int64) {
	if p == nil {
		return
	}
	p.draw(done, time.Now())
	fmt.Fprintln(p.w)
}

func (p *progressBar) draw(done int64, now time.Time) {
	const width = 30
	rate := ""
	if secs := now.Sub(p.start).Seconds(); secs > 0.5 {
		rate = fmt.Sprintf("  %.0f records/s", float64(done)/secs)
	}
	if p.total <= 0 {
		fmt.Fprintf(p.w, "\r%s %d records%s\033[K", p.label, done, rate)
		return
	}
	frac := min(float64(done)/float64(p.total), 1)
	full := int(frac * width)
	bar := strings.Repeat("=", full) + strings.Repeat(" ", width-full)
	if full > 0 && full < width {
		bar = bar[:full-1] + ">" + bar[full:]
	}
	fmt.Fprintf(p.w, "\r%s [%s] %3.0f%%  %d/%d records%s\033[K", p.label, bar, frac*100, done, p.total, rate)
}

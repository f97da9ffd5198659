// Package journal writes the refusal journal: the device requests dpsd
// refused, kept in the store so that anyone with read rights can find out
// why a device was refused, on any node.
//
// Recording never slows a registration down: Record puts the entry on a
// bounded queue and returns; one goroutine writes the queue in batches. A
// full queue drops the entry, and a failed write drops its batch; both are
// counted (dpsd_refusal_journal_entries_total) and neither is ever seen by
// the device. The same goroutine keeps the journal within its bounds,
// oldest entries first.
package journal

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/dpsd/dpsd/internal/store"
)

// Defaults of Options.
const (
	DefaultMaxEntries    = 100_000
	DefaultMaxAge        = 7 * 24 * time.Hour
	DefaultQueueSize     = 4096
	DefaultBatchSize     = 256
	DefaultFlushInterval = 500 * time.Millisecond
	DefaultTrimInterval  = 30 * time.Second
	// writeTimeout bounds one batch write or trim.
	writeTimeout = 10 * time.Second
	// failureLogEvery limits the warnings of failed writes: while the
	// database is down every batch fails, and the store logs the outage.
	failureLogEvery = time.Minute
)

// Options tune a Journal; zero fields take the defaults.
type Options struct {
	// MaxEntries and MaxAge bound the journal.
	MaxEntries int
	MaxAge     time.Duration
	// QueueSize is how many entries may wait for the writer; beyond it
	// Record drops them.
	QueueSize int
	// BatchSize is the most entries one write carries.
	BatchSize int
	// FlushInterval is how long an entry may wait for a batch to fill.
	FlushInterval time.Duration
	// TrimInterval is how often the bounds are enforced.
	TrimInterval time.Duration
	// Registry receives the journal's metrics (nil: not registered).
	Registry prometheus.Registerer
	Log      *slog.Logger
	Now      func() time.Time
}

func (o *Options) init() {
	orDefault(&o.MaxEntries, DefaultMaxEntries)
	orDefault(&o.MaxAge, DefaultMaxAge)
	orDefault(&o.QueueSize, DefaultQueueSize)
	orDefault(&o.BatchSize, DefaultBatchSize)
	orDefault(&o.FlushInterval, DefaultFlushInterval)
	orDefault(&o.TrimInterval, DefaultTrimInterval)
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
}

func orDefault[T int | time.Duration](v *T, def T) {
	if *v <= 0 {
		*v = def
	}
}

// Journal records refusals into a store. Make one with New; Close it.
type Journal struct {
	st      store.Store
	o       Options
	queue   chan *store.Refusal
	flushes chan chan struct{}
	stop    chan struct{}
	done    chan struct{}
	once    sync.Once
	entries *prometheus.CounterVec // outcome: written, dropped, failed

	lastWarn time.Time
	failed   int // entries lost since the last warning
}

// New starts a journal writing into st.
func New(st store.Store, o Options) *Journal {
	o.init()
	j := &Journal{
		st: st, o: o,
		queue:   make(chan *store.Refusal, o.QueueSize),
		flushes: make(chan chan struct{}),
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
		entries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dpsd_refusal_journal_entries_total",
			Help: "Refusal journal entries by outcome: written; dropped because the queue was full; failed because the store write failed.",
		}, []string{"outcome"}),
	}
	for _, outcome := range []string{"written", "dropped", "failed"} {
		j.entries.WithLabelValues(outcome) // present at 0 from the start
	}
	if o.Registry != nil {
		o.Registry.MustRegister(j.entries)
	}
	go j.run()
	return j
}

// Record queues an entry. It never blocks: when the queue is full the entry
// is dropped and counted.
func (j *Journal) Record(r *store.Refusal) {
	if r.Time.IsZero() {
		r.Time = j.o.Now()
	}
	select {
	case j.queue <- r:
	default:
		j.entries.WithLabelValues("dropped").Inc()
	}
}

// Flush writes every entry recorded before it was called and enforces the
// bounds, or gives up when ctx ends.
func (j *Journal) Flush(ctx context.Context) error {
	ack := make(chan struct{})
	select {
	case j.flushes <- ack:
	case <-j.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case <-ack:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close writes what is queued and stops the writer.
func (j *Journal) Close() {
	j.once.Do(func() { close(j.stop) })
	<-j.done
}

func (j *Journal) run() {
	defer close(j.done)
	flush := time.NewTicker(j.o.FlushInterval)
	defer flush.Stop()
	trim := time.NewTicker(j.o.TrimInterval)
	defer trim.Stop()
	j.trim()
	batch := make([]*store.Refusal, 0, j.o.BatchSize)
	for {
		select {
		case r := <-j.queue:
			if batch = append(batch, r); len(batch) == j.o.BatchSize {
				batch = j.write(batch)
			}
		case <-flush.C:
			batch = j.write(batch)
		case <-trim.C:
			j.trim()
		case ack := <-j.flushes:
			batch = j.write(j.drain(batch))
			j.trim()
			close(ack)
		case <-j.stop:
			j.write(j.drain(batch))
			return
		}
	}
}

// drain writes every queued entry but the last partial batch, which it
// returns.
func (j *Journal) drain(batch []*store.Refusal) []*store.Refusal {
	for {
		select {
		case r := <-j.queue:
			if batch = append(batch, r); len(batch) == j.o.BatchSize {
				batch = j.write(batch)
			}
		default:
			return batch
		}
	}
}

// write stores batch and returns it emptied. A failure loses the batch: the
// journal is a diagnostic aid, and a database that refuses it is logged by
// the store already.
func (j *Journal) write(batch []*store.Refusal) []*store.Refusal {
	if len(batch) == 0 {
		return batch
	}
	ctx, cancel := context.WithTimeout(context.Background(), writeTimeout)
	defer cancel()
	if err := j.st.AddRefusals(ctx, batch); err != nil {
		j.entries.WithLabelValues("failed").Add(float64(len(batch)))
		j.failed += len(batch)
		if now := time.Now(); now.Sub(j.lastWarn) >= failureLogEvery {
			j.o.Log.Warn("the refusal journal could not be written; entries are lost", "entries", j.failed, "err", err)
			j.lastWarn, j.failed = now, 0
		}
	} else {
		j.entries.WithLabelValues("written").Add(float64(len(batch)))
	}
	clear(batch)
	return batch[:0]
}

// trim enforces the bounds.
func (j *Journal) trim() {
	ctx, cancel := context.WithTimeout(context.Background(), writeTimeout)
	defer cancel()
	n, err := j.st.TrimRefusals(ctx, j.o.MaxEntries, j.o.Now().Add(-j.o.MaxAge))
	switch {
	case err != nil:
		j.o.Log.Debug("trimming the refusal journal", "err", err)
	case n > 0:
		j.o.Log.Debug("trimmed the refusal journal", "deleted", n)
	}
}

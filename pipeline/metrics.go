package pipeline

import (
	"context"
	"errors"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/fhirload/fhirload/loader"
)

// loaderStats is what the metrics read of the REST writer at scrape time.
type loaderStats interface{ Stats() loader.Stats }

// Metrics are the Prometheus metrics of a process. A nil *Metrics records
// nothing, so callers need not check.
type Metrics struct {
	reg           *prometheus.Registry
	lines         prometheus.Counter
	deadLetters   *prometheus.CounterVec
	objectsActive prometheus.Gauge
	objectsDone   prometheus.Counter
	sqsReceived   prometheus.Counter
	sqsDeleted    prometheus.Counter
	latency       prometheus.Histogram
	checkpointLag prometheus.Gauge
}

// NewMetrics registers the pipeline's metrics on a registry of its own (with
// the Go and process collectors). WriterStats adds the REST writer's
// counters, read at scrape time.
func NewMetrics() *Metrics {
	reg := prometheus.NewRegistry()
	m := &Metrics{
		reg: reg,
		lines: prometheus.NewCounter(prometheus.CounterOpts{Name: "fhirload_lines_read_total",
			Help: "Input lines read."}),
		deadLetters: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "fhirload_dead_letters_total",
			Help: "Lines dead-lettered, by reason."}, []string{"reason"}),
		objectsActive: prometheus.NewGauge(prometheus.GaugeOpts{Name: "fhirload_objects_in_progress",
			Help: "Objects being read now."}),
		objectsDone: prometheus.NewCounter(prometheus.CounterOpts{Name: "fhirload_objects_total",
			Help: "Objects processed."}),
		sqsReceived: prometheus.NewCounter(prometheus.CounterOpts{Name: "fhirload_sqs_messages_received_total",
			Help: "SQS messages received."}),
		sqsDeleted: prometheus.NewCounter(prometheus.CounterOpts{Name: "fhirload_sqs_messages_deleted_total",
			Help: "SQS messages deleted (acknowledged)."}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "fhirload_request_duration_seconds",
			Help: "FHIR request latency.", Buckets: prometheus.ExponentialBuckets(0.001, 2, 16)}),
		checkpointLag: prometheus.NewGauge(prometheus.GaugeOpts{Name: "fhirload_checkpoint_lag_lines",
			Help: "Lines read but not yet covered by a checkpoint."}),
	}
	reg.MustRegister(m.lines, m.deadLetters, m.objectsActive, m.objectsDone, m.sqsReceived, m.sqsDeleted,
		m.latency, m.checkpointLag,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// WriterStats registers gauges and counters read from the loader at scrape time.
func (m *Metrics) WriterStats(w loaderStats) {
	if m == nil || w == nil {
		return
	}
	f := func(name, help string, kind prometheus.ValueType, get func() float64) prometheus.Collector {
		if kind == prometheus.CounterValue {
			return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, get)
		}
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, get)
	}
	m.reg.MustRegister(
		f("fhirload_requests_total", "FHIR requests sent.", prometheus.CounterValue, func() float64 { return float64(w.Stats().Requests) }),
		f("fhirload_retries_total", "Requests or entries retried.", prometheus.CounterValue, func() float64 { return float64(w.Stats().Retries) }),
		f("fhirload_throttled_total", "429 answers.", prometheus.CounterValue, func() float64 { return float64(w.Stats().Throttled) }),
		f("fhirload_resources_loaded_total", "Resources loaded (created or updated).", prometheus.CounterValue, func() float64 { st := w.Stats(); return float64(st.Created + st.Updated) }),
		f("fhirload_resources_created_total", "Resources created.", prometheus.CounterValue, func() float64 { return float64(w.Stats().Created) }),
		f("fhirload_resources_updated_total", "Resources updated.", prometheus.CounterValue, func() float64 { return float64(w.Stats().Updated) }),
		f("fhirload_requests_in_flight", "Requests in flight.", prometheus.GaugeValue, func() float64 { return float64(w.Stats().InFlight) }),
		f("fhirload_concurrency_limit", "Current adaptive concurrency limit.", prometheus.GaugeValue, func() float64 { return float64(w.Stats().Limit) }),
	)
	m.reg.MustRegister(&retriesByCause{w: w, desc: prometheus.NewDesc("fhirload_retries_by_cause_total",
		"Retries by cause.", []string{"cause"}, nil)})
}

type retriesByCause struct {
	w    loaderStats
	desc *prometheus.Desc
}

func (c *retriesByCause) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }
func (c *retriesByCause) Collect(ch chan<- prometheus.Metric) {
	for cause, n := range c.w.Stats().RetriesByCause {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.CounterValue, float64(n), cause)
	}
}

// Register adds collectors of another stage (verify's counters) to the
// process's registry; a nil *Metrics ignores them.
func (m *Metrics) Register(cs ...prometheus.Collector) error {
	if m == nil {
		return nil
	}
	for _, c := range cs {
		if err := m.reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}

// ObserveLatency records one request's latency.
func (m *Metrics) ObserveLatency(d time.Duration) {
	if m != nil {
		m.latency.Observe(d.Seconds())
	}
}

func (m *Metrics) addCheckpointLag(delta int64) {
	if m != nil {
		m.checkpointLag.Add(float64(delta))
	}
}

func (m *Metrics) lineRead() {
	if m != nil {
		m.lines.Inc()
	}
}

func (m *Metrics) deadLettered(reason string) {
	if m != nil {
		m.deadLetters.WithLabelValues(reason).Inc()
	}
}

func (m *Metrics) objectStarted() {
	if m != nil {
		m.objectsActive.Inc()
	}
}

func (m *Metrics) objectFinished() {
	if m != nil {
		m.objectsActive.Dec()
		m.objectsDone.Inc()
	}
}

// SQSReceived counts a received message.
func (m *Metrics) SQSReceived() {
	if m != nil {
		m.sqsReceived.Inc()
	}
}

// SQSDeleted counts a deleted (acknowledged) message.
func (m *Metrics) SQSDeleted() {
	if m != nil {
		m.sqsDeleted.Inc()
	}
}

// Serve exposes /metrics, /healthz (alive) and /readyz (ready() == nil) on
// addr until ctx is done.
func (m *Metrics) Serve(ctx context.Context, addr string, ready func(context.Context) error) (net.Addr, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {
		if ready != nil {
			ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
			defer cancel()
			if err := ready(ctx); err != nil {
				http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
				return
			}
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	go func() {
		if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			_ = err
		}
	}()
	return l.Addr(), nil
}

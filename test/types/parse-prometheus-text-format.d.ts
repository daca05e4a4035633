/** Types for parse-prometheus-text-format (it ships none): the Prometheus text format as families of samples. */
declare module 'parse-prometheus-text-format' {
  /** One sample of a counter, gauge or untyped family (histograms and summaries carry buckets or quantiles instead). */
  export interface PromSample {
    /** The value as written (`"42"`, `"NaN"`, `"+Inf"`). */
    value: string;
    labels?: Record<string, string>;
  }
  export interface PromFamily {
    name: string;
    help: string;
    /** `COUNTER`, `GAUGE`, `HISTOGRAM`, `SUMMARY` or `UNTYPED`. */
    type: string;
    metrics: PromSample[];
  }
  export default function parsePrometheusTextFormat(text: string): PromFamily[];
}

/** What every benchmark scenario returns. */
export interface ScenarioResult {
  /** Short name, used in file names and BENCHMARKS.md markers. */
  scenario: string;
  /** When it ran (ISO time) and on what. */
  when: string;
  machine: { cpus: number; model: string; node: string };
  /** Scenario-specific rows. */
  rows: Record<string, unknown>[];
  /** A markdown section (title, table, notes) for BENCHMARKS.md. */
  markdown: string;
}

/** Options of the frame-rate scenarios (stream, vhost). */
export interface RateOpts {
  root: string;
  seconds: number;
  repeat: number;
  pin: boolean;
}

/** One frame-rate measurement: frames and Gbit/s a sink received per second. */
export interface Measure {
  fps: number;
  gbps: number;
}

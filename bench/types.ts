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

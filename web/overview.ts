/**
 * The shape of `GET /v1/overview` (docs/api.md) as the dashboard reads it.
 */
export interface OverviewView {
  at: number;
  host: string;
  scope: 'host' | 'fabric';
  hosts: OverviewHost[];
  networks: { name: string; vni: number; mtu: number; hosts: string[] }[];
  ports: OverviewPort[];
  links: OverviewLink[];
  exports: OverviewExport[];
}
export interface OverviewHost {
  id: string;
  state: 'up' | 'down' | 'unreachable';
  local: boolean;
  address?: string;
  http?: string;
  reason?: string;
  at?: number;
}
export interface OverviewPort {
  host: string;
  name: string;
  kind: string;
  network?: string;
  state: string;
  macs: string[];
  mac_count: number;
  peer?: string;
  rx_bytes: number;
  rx_frames: number;
  tx_bytes: number;
  tx_frames: number;
  drops: Record<string, number>;
  qos?: { min: number; max: number; rate: number };
}
export interface OverviewLink {
  host: string;
  name: string;
  peer?: string;
  state: string;
  path: 'direct' | 'relay';
  transport: string;
  rtt_ms?: number;
  tx_bps: number;
  rx_bps: number;
  tx_bytes: number;
  rx_bytes: number;
  drops: Record<string, number>;
}
export interface OverviewExport {
  host: string;
  name: string;
  state: string;
  size: number | null;
  clients: number;
  requests: number;
  errors: number;
  bytes_read: number;
  bytes_written: number;
}

// Compiled with tsc --strict against the generated types: the operations' shapes are
// what a TypeScript front end would get.
import type { CheckInMutation, DashboardQuery, ProgressSubscription } from "./generated/types";

export function firstKeyResult(data: DashboardQuery): string | undefined {
  return data.objectives.edges[0]?.node.keyResults[0]?.id;
}

export function checkedInValue(data: CheckInMutation): number | undefined {
  return data.checkIn.checkIn?.value;
}

export function movedTo(event: ProgressSubscription): number[] {
  return event.progressChanged.changes.map((change) => change.progress);
}

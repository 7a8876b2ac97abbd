/** How to train locally: the server's plan, its time budget capped by the session. */

import type { PlanDoc } from "./api.js";
import { ConfigError } from "./errors.js";

export interface TrainPlan {
  readonly lr: number;
  readonly batchSize: number;
  readonly epochs: number;
  readonly maxSteps: number | null;
  readonly timeBudgetS: number | null;
}

export function checkPlan(plan: TrainPlan): TrainPlan {
  if (!Number.isFinite(plan.lr) || plan.lr < 0) throw new ConfigError(`plan lr must be a finite number >= 0, got ${plan.lr}`);
  if (!Number.isInteger(plan.batchSize) || plan.batchSize < 1 || !Number.isInteger(plan.epochs) || plan.epochs < 1) {
    throw new ConfigError("plan batch_size and epochs must be integers >= 1");
  }
  if (plan.maxSteps !== null && !(plan.maxSteps >= 0)) throw new ConfigError("plan max_steps must be >= 0");
  if (plan.timeBudgetS !== null && !(plan.timeBudgetS > 0)) throw new ConfigError("plan time_budget_s must be > 0");
  return plan;
}

/** The server's plan as a TrainPlan, its time budget capped at `budgetS`. */
export function planFrom(plan: PlanDoc, budgetS: number): TrainPlan {
  const wanted = plan.time_budget_s ?? Infinity;
  const budget = Math.min(Number(wanted), budgetS);
  return checkPlan({
    lr: Number(plan.lr),
    batchSize: Number(plan.batch_size),
    epochs: Number(plan.epochs ?? 1) || 1,
    maxSteps: plan.max_steps === null || plan.max_steps === undefined ? null : Number(plan.max_steps),
    timeBudgetS: Number.isFinite(budget) ? budget : null,
  });
}

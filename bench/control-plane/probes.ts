/**
 * What a REST request spends where: the control plane's agent calls (timed by a Connect
 * interceptor it installs on its agent clients) and its database time (startServer's
 * `observeDb` hook). Requests here run one at a time, so what a probe counted between two
 * reads is what that request spent (heartbeats aside, every 10 s).
 */
import type { Interceptor } from "@connectrpc/connect";
import type { DbObservation } from "@nestbox/server/main";
import { msSince } from "../lib.js";
import type { BenchStack } from "../support/stack.js";

/** Sums database time; pass `observe` to startServer's `observeDb`. */
export function observeDatabase(): {
  observe(o: DbObservation): void;
  take(): { ms: number; queries: number };
} {
  let ms = 0;
  let queries = 0;
  return {
    observe(o) {
      ms += o.ms;
      queries++;
    },
    take() {
      const r = { ms, queries };
      ms = 0;
      queries = 0;
      return r;
    },
  };
}

/**
 * Times the control plane's calls to the agent (unary calls until they settle, streams until
 * they end) with a Connect interceptor the control plane installs on its agent clients
 * (`startServer({ agentInterceptors })`). Together with observeDatabase this splits a REST
 * request into agent time, database time and the rest (HTTP, auth, validation, JSON, the
 * event loop).
 */
export function instrumentAgentCalls(): {
  interceptor: Interceptor;
  take(): { ms: number; calls: number };
} {
  let ms = 0;
  let calls = 0;
  const interceptor: Interceptor = (next) => async (req) => {
    const t0 = process.hrtime.bigint();
    const done = () => {
      ms += msSince(t0);
      calls++;
    };
    let res: Awaited<ReturnType<typeof next>>;
    try {
      res = await next(req);
    } catch (err) {
      done();
      throw err;
    }
    if (!res.stream) {
      done();
      return res;
    }
    const messages = res.message;
    return {
      ...res,
      message: (async function* () {
        try {
          yield* messages;
        } finally {
          done();
        }
      })(),
    };
  };
  return {
    interceptor,
    take() {
      const r = { ms, calls };
      ms = 0;
      calls = 0;
      return r;
    },
  };
}

export interface Probes {
  db: ReturnType<typeof observeDatabase>;
  agent: ReturnType<typeof instrumentAgentCalls>;
}

/** One REST request, split into its total, the agent calls it made and its database time. */
export async function timedApi(
  s: BenchStack,
  probes: Probes,
  method: string,
  route: string,
  body?: unknown,
) {
  probes.db.take();
  probes.agent.take();
  const t0 = process.hrtime.bigint();
  const res = await s.api(method, route, body);
  const ms = msSince(t0);
  return { res, ms, agentMs: probes.agent.take().ms, dbMs: probes.db.take().ms };
}

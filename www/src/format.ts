// How the research panel words a job: its answer, its sources, its id.

/** The answer to show: the streamed text, else the result's text. */
export function answerOf(text: string, result: unknown): { text: string; streamed: boolean } {
  if (text) return { text, streamed: true };
  const r = result as Record<string, unknown> | null;
  const v = r && (r.summary ?? r.answer ?? r.text);
  return { text: typeof v === 'string' ? v : '', streamed: false };
}

/** "N sources found" in a research job's status message. */
export function sourcesIn(message: string | null): number | null {
  const m = message && /(\d+)\s+sources?\s+found/i.exec(message);
  return m ? Number(m[1]) : null;
}

/** The job kinds the research panel shows (the trade page's orders are jobs of kind `order`). */
export const RESEARCH_KINDS = ['research', 'llm'];

export function short(id: string) {
  return id.length > 10 ? `${id.slice(0, 8)}…` : id;
}

/** The question a research or LLM job was started with. */
export function queryOf(params: unknown): string {
  const q = (params as { query?: unknown } | null)?.query;
  return typeof q === 'string' ? q : '';
}

import { messageOf } from "$lib/api/client";

/** One page of a paginated `/v1/admin/…` list, as the admin lists answer. */
export interface PageOf<T> {
  items: T[];
  page: number;
  total: number;
  total_pages: number;
}

/**
 * A paginated list's state for a page: the rows of the current page, its position, loading and
 * error. Only the latest `load` applies (a slow earlier answer, e.g. before a filter changed,
 * is dropped).
 */
export class PagedList<T> {
  items = $state<T[]>([]);
  page = $state(1);
  total = $state(0);
  totalPages = $state(0);
  loading = $state(true);
  error = $state("");
  private seq = 0;

  constructor(private readonly fetchPage: (page: number) => Promise<PageOf<T>>) {}

  /** Loads page `p` (default: the current one again). */
  async load(p = this.page): Promise<void> {
    const mine = ++this.seq;
    this.loading = true;
    try {
      const res = await this.fetchPage(p);
      if (mine !== this.seq) return;
      this.items = res.items;
      this.page = res.page;
      this.total = res.total;
      this.totalPages = res.total_pages;
      this.error = "";
    } catch (err) {
      if (mine === this.seq) this.error = messageOf(err);
    } finally {
      if (mine === this.seq) this.loading = false;
    }
  }
}

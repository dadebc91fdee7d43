/** `nestbox sandbox …` and `nestbox template …`: being written (issue 4). */
export const clientCommands: Record<
  string,
  { summary: string; usage: string; run(args: string[]): Promise<number> }
> = {};

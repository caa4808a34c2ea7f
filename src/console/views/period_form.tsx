/** Periods of the hourly stats pages, as `?hours=` values and their labels. */
export const HOUR_OPTIONS: Array<[string, string]> = [
  ["1", "Last hour"],
  ["6", "Last 6 hours"],
  ["24", "Last 24 hours"],
  ["168", "Last 7 days"],
  ["720", "Last 30 days"],
];
export const HOURS = HOUR_OPTIONS.map(([v]) => v);

/** A GET form picking the period of a stats page; it works without JS. */
export function PeriodForm(
  props: { name: string; value: string; action: string; options: Array<[string, string]> },
) {
  return (
    <form class="inline" method="get" action={props.action}>
      <div class="field">
        <label for="period">Period</label>
        <select id="period" name={props.name}>
          {props.options.map(([value, label]) => (
            <option value={value} selected={value === props.value}>{label}</option>
          ))}
        </select>
      </div>
      <button type="submit" class="secondary">Show</button>
    </form>
  );
}

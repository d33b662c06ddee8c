-- One row per customer: what they did in the first 60 days (the features) and whether they
-- ordered again in the last 30 (the label: churned when they did not).
with early as (
    select customer_id,
           count(*)              as orders,
           sum(amount)           as spent,
           avg(amount)           as avg_amount,
           max(day) - min(day)   as active_span,
           60 - max(day)         as days_since_last
    from {{ ref('stg_orders') }}
    where day < 60
    group by customer_id
),
late as (
    select distinct customer_id from {{ ref('stg_orders') }} where day >= 60
)
select e.*, case when l.customer_id is null then 1 else 0 end as churned
from early e
left join late l using (customer_id)
